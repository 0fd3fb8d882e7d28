//! The exporter's settings, from the standard OpenTelemetry variables (`OTEL_*`). Traces are
//! off unless an OTLP endpoint is set; only OTLP over HTTP with protobuf is spoken.

use std::time::Duration;

/// Where and how spans are exported.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub endpoint: url::Url,
    /// Extra request headers (often credentials: never logged).
    pub headers: Vec<(String, String)>,
    /// Time for one export request.
    pub timeout: Duration,
    /// The resource: `service.name` first, then `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    /// Which traces are recorded.
    pub sampler: Sampler,
    /// Longest wait before spans waiting are sent (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
    /// Spans kept waiting at most; past it they are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Spans per request at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch: usize,
}

/// `OTEL_TRACES_SAMPLER` (with `OTEL_TRACES_SAMPLER_ARG` for a ratio): whether a trace this
/// process starts, or continues, is recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// This share of traces, by trace id (0 to 1).
    TraceIdRatio(f64),
    /// As the incoming `traceparent` says; a new trace is recorded (the default).
    ParentBasedAlwaysOn,
    /// As the incoming `traceparent` says; a new trace is not.
    ParentBasedAlwaysOff,
    /// As the incoming `traceparent` says; a new trace by its id's ratio.
    ParentBasedTraceIdRatio(f64),
}

impl Sampler {
    /// Whether a span of trace `trace_id` is recorded: `parent_sampled` is the incoming
    /// trace's flag, `None` for a new trace.
    pub fn sampled(self, parent_sampled: Option<bool>, trace_id: &[u8; 16]) -> bool {
        match (self, parent_sampled) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::TraceIdRatio(r), _) => within_ratio(trace_id, r),
            (_, Some(parent)) => parent,
            (Sampler::ParentBasedAlwaysOn, None) => true,
            (Sampler::ParentBasedAlwaysOff, None) => false,
            (Sampler::ParentBasedTraceIdRatio(r), None) => within_ratio(trace_id, r),
        }
    }
}

/// Whether the trace id's last 8 bytes, as a number, fall in the lowest `ratio` of their range
/// (the same answer for the same trace everywhere).
fn within_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let n = u64::from_be_bytes(low);
    ratio >= 1.0 || (n as f64) < ratio * (u64::MAX as f64)
}

impl std::fmt::Debug for Settings {
    /// Header values are left out: they are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Settings")
            .field(
                "endpoint",
                &crate::invoke::request::loggable_url(&self.endpoint),
            )
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("resource", &self.resource)
            .field("sampler", &self.sampler)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The settings the variables `get` returns give; `Ok(None)`: traces are off (no endpoint,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    ///
    /// # Errors
    ///
    /// One line per variable whose value cannot be honoured, naming it.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, Vec<String>> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut errors = Vec::new();
        if switched_off(&get, &mut errors) {
            return Ok(None);
        }
        let endpoint = match endpoint(&get) {
            Ok(Some(url)) => Some(url),
            Ok(None) if errors.is_empty() => return Ok(None),
            Ok(None) => None,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let either = |specific: &str, general: &str| get(specific).or_else(|| get(general));
        let protocol = either(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        if let Some(p) = protocol.as_deref().map(str::trim)
            && p != "http/protobuf"
        {
            errors.push(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={p}: only http/protobuf is supported"
            ));
        }
        let headers = either(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        )
        .map(|raw| pairs("OTEL_EXPORTER_OTLP_HEADERS", &raw, true))
        .unwrap_or(Ok(Vec::new()))
        .unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        });
        let pace = Pace::read(&get, &mut errors);
        let sampler = sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))
            .unwrap_or_else(|e| {
                errors.push(e);
                Sampler::ParentBasedAlwaysOn
            });
        let resource = resource(&get).unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        });
        match endpoint {
            Some(endpoint) if errors.is_empty() => Ok(Some(Settings {
                endpoint,
                headers,
                timeout: pace.timeout,
                resource,
                sampler,
                schedule_delay: pace.schedule_delay,
                max_queue: pace.max_queue,
                max_batch: pace.max_batch.min(pace.max_queue),
            })),
            _ => Err(errors),
        }
    }
}

/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`; an exporter other than `otlp` is
/// an error.
fn switched_off(get: &impl Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> bool {
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return true;
    }
    match get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => false,
        Some("none") => true,
        Some(other) => {
            errors.push(format!(
                "OTEL_TRACES_EXPORTER={other}: only otlp (or none) is supported"
            ));
            false
        }
    }
}

/// How long and how much: the export timeout and the batching of spans.
struct Pace {
    timeout: Duration,
    schedule_delay: Duration,
    max_queue: usize,
    max_batch: usize,
}

impl Pace {
    fn read(get: &impl Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> Pace {
        let mut number = |name: &str, raw: Option<String>, default: u64, max: u64| match raw
            .map(|v| v.trim().parse::<u64>())
        {
            None => default,
            Some(Ok(n)) if (1..=max).contains(&n) => n,
            Some(_) => {
                errors.push(format!("{name}: a whole number from 1 to {max}"));
                default
            }
        };
        let timeout =
            get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"));
        let timeout_ms = number("OTEL_EXPORTER_OTLP_TIMEOUT", timeout, 10_000, 600_000);
        let delay = get("OTEL_BSP_SCHEDULE_DELAY");
        let delay_ms = number("OTEL_BSP_SCHEDULE_DELAY", delay, 5_000, 600_000);
        let queue = get("OTEL_BSP_MAX_QUEUE_SIZE");
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", queue, 2_048, 1_000_000);
        let batch = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
        let max_batch = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch, 512, 100_000);
        Pace {
            timeout: Duration::from_millis(timeout_ms),
            schedule_delay: Duration::from_millis(delay_ms),
            max_queue: max_queue as usize,
            max_batch: max_batch as usize,
        }
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `OTEL_EXPORTER_OTLP_ENDPOINT` with
/// `/v1/traces` appended; `None` when neither is set.
fn endpoint(get: &impl Fn(&str) -> Option<String>) -> Result<Option<url::Url>, String> {
    let (name, raw) = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(full), _) => (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            full.trim().to_string(),
        ),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim().trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    match url::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Some(u)),
        _ => Err(format!("{name}: an http:// or https:// URL")),
    }
}

fn sampler(raw: Option<String>, arg: Option<String>) -> Result<Sampler, String> {
    // The ratio of the ratio samplers: 1 when not given, as the specification says.
    let ratio = || match arg.as_deref().map(|a| a.trim().parse::<f64>()) {
        None => Ok(1.0),
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(_) => Err("OTEL_TRACES_SAMPLER_ARG: a ratio from 0 to 1".to_string()),
    };
    Ok(match raw.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => Sampler::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => Sampler::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => Sampler::ParentBasedTraceIdRatio(ratio()?),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatio(ratio()?),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other}: one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            ));
        }
    })
}

/// `service.name` (`OTEL_SERVICE_NAME`, else the one in `OTEL_RESOURCE_ATTRIBUTES`, else
/// `queue-worker`) first, then the other resource attributes.
fn resource(get: &impl Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, String> {
    let mut attrs = match get("OTEL_RESOURCE_ATTRIBUTES") {
        Some(raw) => pairs("OTEL_RESOURCE_ATTRIBUTES", &raw, false)?,
        None => Vec::new(),
    };
    let named = attrs.iter().position(|(k, _)| k == "service.name");
    let service = match (get("OTEL_SERVICE_NAME"), named) {
        (Some(name), _) => name.trim().to_string(),
        (None, Some(i)) => attrs[i].1.clone(),
        (None, None) => "queue-worker".to_string(),
    };
    attrs.retain(|(k, _)| k != "service.name");
    attrs.insert(0, ("service.name".to_string(), service));
    Ok(attrs)
}

/// `key=value,key=value` with percent-encoded values; with `as_headers`, each a valid HTTP
/// header. The error names `name` but never a value.
fn pairs(name: &str, raw: &str, as_headers: bool) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("{name}: a list of key=value pairs"));
        };
        let key = k.trim().to_string();
        let value = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| format!("{name}: values must be UTF-8 once percent-decoded"))?
            .into_owned();
        let valid_header = http::HeaderName::from_bytes(key.as_bytes()).is_ok()
            && http::HeaderValue::from_str(&value).is_ok();
        if key.is_empty() || (as_headers && !valid_header) {
            return Err(format!("{name}: {key:?} is not a valid header"));
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<Settings>, Vec<String>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        assert!(read(&on).unwrap().is_some());
        let disabled = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert_eq!(read(&disabled).unwrap(), None);
        let none = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert_eq!(read(&none).unwrap(), None);
    }

    #[test]
    fn the_endpoint_the_headers_and_the_resource() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-tenant=t"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=q,deployment.environment=prod",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.as_str(), "http://c:4318/v1/traces");
        assert_eq!(s.headers[0], ("api-key".into(), "a b".into()));
        assert_eq!(s.resource[0], ("service.name".into(), "q".into()));
        assert_eq!(s.resource.len(), 2);
        assert!(
            !format!("{s:?}").contains("a b"),
            "header values never printed"
        );
        let s = read(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c/x")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint.as_str(), "https://c/x");
        assert_eq!(s.resource[0].1, "queue-worker");
    }

    #[test]
    fn what_cannot_be_honoured_is_an_error_naming_the_variable() {
        let errors = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "secret-less"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let errors = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]).unwrap_err();
        assert!(errors[0].contains("http://"), "{errors:?}");
    }

    #[test]
    fn sampling_follows_the_parent_unless_told_otherwise() {
        let id = [7u8; 16];
        assert!(Sampler::ParentBasedAlwaysOn.sampled(None, &id));
        assert!(!Sampler::ParentBasedAlwaysOn.sampled(Some(false), &id));
        assert!(!Sampler::ParentBasedAlwaysOff.sampled(None, &id));
        assert!(Sampler::AlwaysOn.sampled(Some(false), &id));
        assert!(!Sampler::AlwaysOff.sampled(Some(true), &id));
        assert!(Sampler::ParentBasedTraceIdRatio(0.0).sampled(Some(true), &id));
        assert!(!Sampler::TraceIdRatio(0.0).sampled(Some(true), &id));
    }

    #[test]
    fn a_ratio_samples_that_share_of_traces_and_the_same_ones_everywhere() {
        let ids: Vec<[u8; 16]> = (0..10_000u32)
            .map(|i| crate::trace::SpanContext::of_call(&i.to_string()).trace_id)
            .collect();
        let share = |s: Sampler| ids.iter().filter(|id| s.sampled(None, id)).count();
        let quarter = share(Sampler::TraceIdRatio(0.25));
        assert!((2_250..=2_750).contains(&quarter), "{quarter} of 10,000");
        assert_eq!(
            share(Sampler::TraceIdRatio(0.25)),
            quarter,
            "the same ones again"
        );
        assert_eq!(share(Sampler::TraceIdRatio(1.0)), 10_000);
        assert_eq!(share(Sampler::TraceIdRatio(0.0)), 0);
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ];
        let s = read(&vars).unwrap().unwrap();
        assert_eq!(s.sampler, Sampler::ParentBasedTraceIdRatio(0.1));
        let bad = [vars[0], vars[1], ("OTEL_TRACES_SAMPLER_ARG", "2")];
        assert!(read(&bad).unwrap_err()[0].starts_with("OTEL_TRACES_SAMPLER_ARG"));
    }
}
