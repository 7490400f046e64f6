//! Token-body validation, as the validate layer runs it on `POST /api/v2/token` and
//! `POST /kyb/tokens/`: any body gives an answer. Turning validation off never refuses and
//! finds the same `clientId`; a `clientId` found is the one the body holds.
#![no_main]

use idenfy_gateway::fuzzing::token_body::{client_id, inspect, parse_body, RouteKind};
use libfuzzer_sys::fuzz_target;

const KINDS: [RouteKind; 3] = [RouteKind::KycToken, RouteKind::KybToken, RouteKind::Other];

fuzz_target!(|data: &[u8]| {
    let Some((&knob, body)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(knob % 3)];
    let checked = inspect(kind, body, true);
    let unchecked = inspect(kind, body, false);
    let unchecked = unchecked.expect("validation off never refuses");
    if let Ok(id) = &checked {
        assert_eq!(id.as_ref().map(|c| &c.0), unchecked.as_ref().map(|c| &c.0));
    }
    let expected = parse_body(body)
        .ok()
        .and_then(|map| client_id(&map).map(|c| c.into_owned()));
    assert_eq!(unchecked.as_ref().map(|c| c.0.to_string()), expected);
});
