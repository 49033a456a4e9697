//! Which of Exchange's two plausible error shapes the end-to-end tests' simulator speaks (docs/microsoft-facts.md
//! §1, "Exchange errors"): `GALBRIDGE_TEST_EXCHANGE_ERRORS=message` gives the exception name in `error.message` and
//! not-found as HTTP 400; anything else (the default) hides it in `error.details` under a generic
//! `ODataServiceException`, with not-found as HTTP 404. `.ci/test` runs the mail-contact tests under both.

/// The simulator's knobs for the selected shape (everything else at its default).
pub fn knobs() -> m365_sim::Knobs {
    let message = std::env::var("GALBRIDGE_TEST_EXCHANGE_ERRORS").is_ok_and(|v| v == "message");
    m365_sim::Knobs {
        exchange_error_shape: if message {
            m365_sim::ExchangeErrorShape::Message
        } else {
            m365_sim::ExchangeErrorShape::Details
        },
        exchange_not_found_status: if message { 400 } else { 404 },
        ..m365_sim::Knobs::default()
    }
}
