//! What the `dedup` layer reads of a token request: the key it coalesces and replays on, the
//! team that asks, the deadline of its wait, and a fingerprint of its body.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;

use crate::context::{ClientId, ContextExt, Deadline, Route, RouteKind};

/// The dedup key: never merged across accounts or route kinds. No team: teams that share an
/// account share iDenfy's clientId space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DedupKey {
    pub(super) account: usize,
    pub(super) kind: RouteKind,
    pub(super) client_id: Arc<str>,
}

/// What the layer needs of a token request, from the extensions outer layers set.
#[derive(Clone)]
pub(super) struct Ticketed {
    pub(super) key: DedupKey,
    pub(super) team: Arc<str>,
    /// The team's index in the config (for its metric handles, and the owner of its flights
    /// and stored sessions).
    pub(super) team_index: usize,
    pub(super) route: &'static str,
    pub(super) deadline: Option<Deadline>,
    pub(super) fingerprint: u64,
}

impl Ticketed {
    /// `None` for requests dedup leaves alone: not a token route, or no clientId or caller.
    pub(super) fn of(req: &Request<Bytes>) -> Option<Self> {
        let route = req.route().filter(Route::creates_token)?;
        let client_id = req.extensions().get::<ClientId>()?;
        let caller = req.caller()?;
        Some(Ticketed {
            key: DedupKey {
                account: caller.account,
                kind: route.kind,
                client_id: Arc::clone(&client_id.0),
            },
            team: Arc::clone(&caller.team_name),
            team_index: caller.team,
            route: route.label,
            deadline: req.deadline(),
            fingerprint: fingerprint(req.body()),
        })
    }
}

/// A cheap hash of the request body, to flag a coalesced or replayed answer to another body.
pub(super) fn fingerprint(body: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    hasher.finish()
}
