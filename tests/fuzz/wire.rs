//! The wire decoder on arbitrary bytes, token soup and mutated real messages: it never panics,
//! a message it decodes names a function and survives encoding and decoding again unchanged,
//! and poison gets a short reason.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use queue_worker::wire::{decode, encode};

use crate::hostile::Raw;
use crate::json::{mutated_fixture, token_soup};
use crate::{bounded, config};

/// What must hold for any input: no panic (the call returns), and a decoded message names a
/// function and is a fixpoint of encoding then decoding.
fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok(req) => {
            prop_assert!(!req.function.is_empty(), "decoded without a function");
            let encoded = encode(&req);
            let again = decode(&encoded);
            prop_assert_eq!(
                again.as_ref(),
                Ok(&req),
                "encoding then decoding changed the message; input {:?}, encoded {:?}",
                Raw(bytes.to_vec()),
                Raw(encoded)
            );
        }
        Err(reason) => {
            let why = reason.to_string();
            prop_assert!(!reason.code().is_empty() && !why.is_empty());
            // Reasons are logged and kept with dead letters: they quote a bounded part.
            prop_assert!(
                bounded(&why),
                "a reason of {} characters",
                why.chars().count()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config("proptest-regressions/fuzz/wire.txt"))]

    #[test]
    fn decode_survives_arbitrary_bytes(bytes in vec(any::<u8>(), 0..2048)) {
        check_decode(&bytes)?;
    }

    #[test]
    fn decode_survives_token_soup(soup in token_soup()) {
        check_decode(&soup.0)?;
    }

    #[test]
    fn decode_survives_mutated_messages(message in mutated_fixture()) {
        check_decode(&message.bytes())?;
    }
}
