//! The range a duration variable must fall in, and how an error message says it.

use std::time::Duration;

use super::format_go_duration;

/// The range a duration variable must fall in.
#[derive(Clone, Copy)]
pub(super) enum Bound {
    Any,
    Positive,
    AtLeast(Duration),
    Within(Duration, Duration),
}

impl Bound {
    pub(super) fn holds(self, d: Duration) -> bool {
        match self {
            Bound::Any => true,
            Bound::Positive => !d.is_zero(),
            Bound::AtLeast(min) => d >= min,
            Bound::Within(min, max) => (min..=max).contains(&d),
        }
    }

    pub(super) fn describe(self) -> String {
        match self {
            Bound::Any => "expected a duration".to_owned(),
            Bound::Positive => "expected a duration greater than 0".to_owned(),
            Bound::AtLeast(min) => format!(
                "expected a duration of at least {}",
                format_go_duration(min)
            ),
            Bound::Within(min, max) => format!(
                "expected a duration from {} to {}",
                format_go_duration(min),
                format_go_duration(max)
            ),
        }
    }
}
