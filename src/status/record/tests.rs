use proptest::prelude::*;

use super::*;

fn ev(at: u64, kind: Kind) -> Event {
    Event {
        function: "f".into(),
        at,
        kind,
    }
}

fn run(events: &[Event]) -> Option<CallStatus> {
    let mut status: Option<CallStatus> = None;
    for e in events {
        if let Some(next) = apply(status.as_ref(), e) {
            status = Some(next);
        }
    }
    status
}

fn finished(state: State, attempts: u32, status: u16) -> Kind {
    Kind::Finished {
        state,
        attempts,
        status: Some(status),
        error: None,
        reason: None,
    }
}

#[test]
fn a_call_that_retries_then_succeeds() {
    let s = run(&[
        ev(1, Kind::Queued),
        ev(2, Kind::Started { attempt: 1 }),
        ev(
            3,
            Kind::Retrying {
                attempt: 1,
                status: 503,
                error: None,
                delay_ms: 1000,
            },
        ),
        ev(1003, Kind::Started { attempt: 2 }),
        ev(1010, finished(State::Succeeded, 2, 200)),
    ])
    .unwrap();
    assert_eq!(s.state, State::Succeeded);
    assert_eq!(s.attempts, 2);
    assert_eq!(s.last_status, Some(200));
    assert_eq!(
        (s.enqueued_at, s.started_at, s.finished_at),
        (Some(1), Some(2), Some(1010))
    );
    assert_eq!(s.next_attempt_at, None);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["state"], "succeeded");
}

#[test]
fn late_and_repeated_events_change_nothing() {
    let s = run(&[
        ev(2, Kind::Started { attempt: 2 }),
        ev(1, Kind::Started { attempt: 1 }),
        ev(
            1,
            Kind::Retrying {
                attempt: 1,
                status: 500,
                error: None,
                delay_ms: 5,
            },
        ),
    ])
    .unwrap();
    assert_eq!((s.state, s.attempts), (State::Running, 2));
    let done = apply(Some(&s), &ev(3, finished(State::Failed, 2, 400))).unwrap();
    for late in [
        Kind::Queued,
        Kind::Started { attempt: 3 },
        finished(State::Succeeded, 3, 200),
    ] {
        assert_eq!(apply(Some(&done), &ev(4, late)), None);
    }
    assert_eq!(apply(Some(&s), &ev(2, Kind::Started { attempt: 2 })), None);
}

fn any_kind() -> impl Strategy<Value = Kind> {
    let terminal = prop_oneof![
        Just(State::Succeeded),
        Just(State::Failed),
        Just(State::Cancelled),
        Just(State::DeadLettered),
        Just(State::Expired),
    ];
    prop_oneof![
        Just(Kind::Queued),
        Just(Kind::Delayed { not_before: 99 }),
        (1u32..5).prop_map(|attempt| Kind::Started { attempt }),
        (1u32..5, 400u16..600).prop_map(|(attempt, status)| Kind::Retrying {
            attempt,
            status,
            error: None,
            delay_ms: 10,
        }),
        (terminal, 1u32..5).prop_map(|(state, attempts)| finished(state, attempts, 200)),
    ]
}

proptest! {
    /// Whatever the order, the first terminal event decides, and nothing leaves it.
    #[test]
    fn the_first_terminal_event_decides(kinds in proptest::collection::vec(any_kind(), 1..12)) {
        let events: Vec<Event> = kinds.into_iter().enumerate().map(|(i, k)| ev(i as u64, k)).collect();
        let mut status: Option<CallStatus> = None;
        let mut terminal: Option<State> = None;
        for e in &events {
            if let Some(next) = apply(status.as_ref(), e) {
                if let Some(t) = terminal {
                    prop_assert!(false, "left terminal {t:?} for {next:?}");
                }
                if next.state.is_terminal() {
                    terminal = Some(next.state);
                }
                status = Some(next);
            }
        }
        let first = events.iter().find_map(|e| match &e.kind {
            Kind::Finished { state, .. } => Some(*state),
            _ => None,
        });
        prop_assert_eq!(terminal, first);
    }
}

#[test]
fn a_delayed_call_is_queued_with_its_due_time() {
    let status = apply(None, &ev(5, Kind::Delayed { not_before: 3000 })).unwrap();
    assert_eq!(status.state, State::Queued);
    assert_eq!(status.not_before, Some(3000));
    assert_eq!(status.enqueued_at, Some(5));
}
