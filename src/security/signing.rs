//! Signed callbacks in the Standard Webhooks format (standardwebhooks.com), so a receiver can
//! check them with an existing library: `webhook-id` (the call id), `webhook-timestamp` (unix
//! seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one
//! signature per secret (space-separated) so a secret can be rotated without a gap. The
//! secrets (`whsec_` + base64 of the key, one a line) come from `callback_signing_secret_file`,
//! read again when the file changes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue};

use super::secret_file::SecretFile;

pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret as Standard Webhooks writes it.
const PREFIX: &str = "whsec_";

/// Shortest key accepted, in bytes (the format's own secrets are 24 to 64 bytes).
const MIN_KEY_BYTES: usize = 16;

/// At most this many secrets sign at once.
const MAX_SECRETS: usize = 8;

/// Signs callbacks with the secrets of a file.
#[derive(Debug)]
pub struct Signer {
    file: SecretFile,
}

impl Signer {
    pub fn new(file: SecretFile) -> Signer {
        Signer { file }
    }

    /// The keys the file holds now; `Err` says why they cannot be used.
    pub fn keys(&self) -> Result<Vec<ring::hmac::Key>, String> {
        let text = self.file.get()?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| format!("{} is not text", self.file.path().display()))?;
        parse_keys(text).map_err(|e| format!("{}: {e}", self.file.path().display()))
    }

    /// Add the three `webhook-*` headers for the message `id` sent at `timestamp` (unix
    /// seconds) with `body`; any such headers already there are replaced.
    pub fn sign(
        &self,
        headers: &mut HeaderMap,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<(), String> {
        let keys = self.keys()?;
        let signature = signature_header(&keys, id, timestamp, body);
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
        headers.insert(WEBHOOK_ID, value(id)?);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(WEBHOOK_SIGNATURE, value(&signature)?);
        Ok(())
    }
}

/// The secrets of the file's text: one `whsec_<base64>` a line; blank lines and `#` comments
/// skipped.
pub fn parse_keys(text: &str) -> Result<Vec<ring::hmac::Key>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let encoded = line
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("line {n}: a secret starts with {PREFIX}"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| format!("line {n}: the secret after {PREFIX} is not base64"))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "line {n}: the secret is {} bytes; at least {MIN_KEY_BYTES} are needed",
                key.len()
            ));
        }
        keys.push(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key));
    }
    if keys.is_empty() {
        return Err("no secret in the file".into());
    }
    if keys.len() > MAX_SECRETS {
        return Err(format!("more than {MAX_SECRETS} secrets"));
    }
    Ok(keys)
}

/// `v1,<sig>` for each key, space-separated.
pub fn signature_header(keys: &[ring::hmac::Key], id: &str, timestamp: u64, body: &[u8]) -> String {
    let prefix = format!("{id}.{timestamp}.");
    keys.iter()
        .map(|key| {
            let mut ctx = ring::hmac::Context::with_key(key);
            ctx.update(prefix.as_bytes());
            ctx.update(body);
            format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries: secret,
    /// id, timestamp and payload, and the signature they give.
    #[test]
    fn signs_as_the_reference_example() {
        let keys = parse_keys("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let sig = signature_header(
            &keys,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_secret_signs_and_bad_files_say_why() {
        let two = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n# next\n\nwhsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
        let keys = parse_keys(two).unwrap();
        let sig = signature_header(&keys, "id", 1, b"body");
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|s| s.starts_with("v1,")));
        for (text, why) in [
            ("", "no secret"),
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),
            ("whsec_!!!", "not base64"),
            ("whsec_AAAA", "at least 16"),
        ] {
            let e = parse_keys(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn sign_replaces_what_the_function_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let signer = Signer::new(SecretFile::new(&path));
        let mut h = HeaderMap::new();
        h.insert(WEBHOOK_SIGNATURE, HeaderValue::from_static("v1,forged"));
        h.insert(WEBHOOK_ID, HeaderValue::from_static("forged"));
        signer.sign(&mut h, "call-1", 1614265330, b"x").unwrap();
        assert_eq!(h.get_all(WEBHOOK_SIGNATURE).iter().count(), 1);
        assert_eq!(h[WEBHOOK_ID], "call-1");
        assert_eq!(h[WEBHOOK_TIMESTAMP], "1614265330");
        assert!(h[WEBHOOK_SIGNATURE].to_str().unwrap().starts_with("v1,"));
        assert_ne!(h[WEBHOOK_SIGNATURE], "v1,forged");
    }
}
