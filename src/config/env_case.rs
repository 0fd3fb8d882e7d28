//! Settings are read from lower-case environment variables (`max_inflight`), as the OpenFaaS
//! chart spells them. A variable that names a setting in another case (`MAX_INFLIGHT`) is never
//! read; [`unread`] finds such variables so that they can be reported instead of silently
//! doing nothing.

use super::ENV_VARS;

/// The variables among `names` that spell a setting in another case, each with the setting's
/// name, in the order given.
pub fn unread<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, &'static str)> {
    names
        .into_iter()
        .filter_map(|name| {
            ENV_VARS
                .iter()
                .find(|setting| name != **setting && name.eq_ignore_ascii_case(setting))
                .map(|setting| (name, *setting))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_cases_of_a_setting_are_found_and_the_rest_left_alone() {
        let env = [
            "MAX_INFLIGHT",
            "max_inflight",
            "PATH",
            "Ack_Wait",
            "HOME",
            "max_inflights",
        ];
        assert_eq!(
            unread(env),
            vec![("MAX_INFLIGHT", "max_inflight"), ("Ack_Wait", "ack_wait")]
        );
        assert!(unread(["queue_name", "NATS_URLS"]).is_empty());
    }
}
