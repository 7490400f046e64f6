//! Identify: which team sent this request. First on the request path (called by `front`), so an unknown caller
//! costs nothing and never reaches iDenfy.
//!
//! A team presents `Authorization: Bearer <token>` or `Basic base64(team:token)` (so an existing
//! iDenfy client can put team:token where it had key:secret). Credentials that match no team
//! belong to the tokenless team, when one is configured (a sidecar's app may still send its old
//! iDenfy key pair: it is dropped, never forwarded).
//!
//! The presented token is found by the SHA-256 of its bytes in a table ([`tokens`]), then
//! compared with the team's token in constant time: the cost is the same for 1 or 1,000 teams,
//! and the time taken tells nothing about how many bytes of a real token matched (the map only
//! ever compares digests, and a digest match is followed by the constant-time compare). A team
//! may have several tokens at once (`tokens`, `token_file`), for a rotation without a gap; the
//! token files are re-read when they change ([`Callers::watch`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use base64::Engine;

use crate::config::Config;
use crate::context::Caller;
use crate::credentials::watch;
use crate::error::GatewayError;

mod tokens;

pub use tokens::read_token_file;

/// The DNS names of the verified client certificate of a request's connection (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertNames(pub Arc<[String]>);

/// The teams as the identify step needs them. Clones share the token table.
#[derive(Debug, Clone)]
pub struct Callers {
    teams: Arc<[Caller]>,
    tokens: Arc<tokens::Tokens>,
    /// Teams by `client_cert_san`.
    by_san: Arc<HashMap<String, usize>>,
    tokenless: Option<usize>,
}

impl Callers {
    /// The config's teams, with their tokens (token files read once).
    pub fn new(config: &Config) -> Self {
        let teams = config
            .teams
            .iter()
            .enumerate()
            .map(|(i, team)| Caller {
                team: i,
                team_name: Arc::from(team.name.as_str()),
                account: team.account,
                account_name: Arc::from(config.accounts[team.account].name.as_str()),
            })
            .collect();
        let by_san = config
            .teams
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((t.client_cert_san.clone()?, i)))
            .collect();
        Callers {
            teams,
            tokens: Arc::new(tokens::Tokens::new(config)),
            by_san: Arc::new(by_san),
            tokenless: config.teams.iter().position(|t| !t.authenticates()),
        }
    }

    /// The caller of team number `team` (an index into `Config::teams`).
    pub fn get(&self, team: usize) -> Option<&Caller> {
        self.teams.get(team)
    }

    /// How many teams there are (a [`Caller::team`] is below this).
    pub fn len(&self) -> usize {
        self.teams.len()
    }

    /// No team at all (never the case for a validated config).
    pub fn is_empty(&self) -> bool {
        self.teams.is_empty()
    }

    /// The team of a request, from its `Authorization` header (or its absence).
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<&Caller, GatewayError> {
        self.identify_with_cert(authorization, None)
    }

    /// [`identify`](Self::identify), then by the client certificate's names (mutual TLS): a
    /// token presented wins over the certificate.
    pub fn identify_with_cert(
        &self,
        authorization: Option<&[u8]>,
        cert: Option<&ClientCertNames>,
    ) -> Result<&Caller, GatewayError> {
        // No team has a token (a sidecar): every request is the tokenless team's, whatever it
        // sends; nothing to decode or hash.
        let found = match self.tokens.is_empty() {
            true => None,
            false => authorization.and_then(|value| self.by_credentials(value)),
        };
        let by_cert = || {
            cert?
                .0
                .iter()
                .find_map(|name| self.by_san.get(name).copied())
        };
        found
            .or_else(by_cert)
            .or(self.tokenless)
            .map(|i| &self.teams[i])
            .ok_or(GatewayError::Unauthorized)
    }

    /// [`identify`](Self::identify) on a request's headers: `Authorization` is looked up only
    /// when some team has a token.
    pub fn identify_request(&self, headers: &http::HeaderMap) -> Result<&Caller, GatewayError> {
        self.identify_request_with(headers, &http::Extensions::new())
    }

    /// [`identify_request`](Self::identify_request), with the request's [`ClientCertNames`]
    /// from its `extensions` (set on a mutual-TLS connection).
    pub fn identify_request_with(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<&Caller, GatewayError> {
        let authorization = match self.tokens.is_empty() {
            true => None,
            false => headers
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes),
        };
        let cert = match self.by_san.is_empty() {
            true => None,
            false => extensions.get::<ClientCertNames>(),
        };
        self.identify_with_cert(authorization, cert)
    }

    fn by_credentials(&self, value: &[u8]) -> Option<usize> {
        let (scheme, rest) = split_scheme(value)?;
        if scheme.eq_ignore_ascii_case(b"bearer") {
            self.by_token(None, rest)
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let colon = decoded.iter().position(|&b| b == b':')?;
            self.by_token(Some(&decoded[..colon]), &decoded[colon + 1..])
        } else {
            None
        }
    }

    /// The team whose token this is (and whose name, for Basic), see the module doc.
    fn by_token(&self, name: Option<&[u8]>, token: &[u8]) -> Option<usize> {
        let i = self.tokens.lookup(token)?;
        name.is_none_or(|n| n == self.teams[i].team_name.as_bytes())
            .then_some(i)
    }

    /// Re-reads the token files now (on the blocking pool) and swaps in their tokens.
    pub async fn reload(&self) {
        let tokens = self.tokens.clone();
        let _ = tokio::task::spawn_blocking(move || tokens.reload()).await;
    }

    /// Watches the directories of the token files and re-reads them on change (and every
    /// [`watch::POLL_INTERVAL`]), until `shutdown` resolves. Returns at once without token files.
    pub async fn watch(self, shutdown: impl Future<Output = ()>) {
        let files = self.tokens.watched_files();
        if files.is_empty() {
            return;
        }
        watch::watch_and_reload(&files, || self.reload(), shutdown).await;
    }
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    let rest = value[space + 1..].trim_ascii();
    (!rest.is_empty()).then_some((&value[..space], rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callers(toml_teams: &str) -> Callers {
        let text = format!(
            "[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n{toml_teams}"
        );
        Callers::new(&Config::parse(&text, &|_| None).unwrap())
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    const TWO_TEAMS: &str = "[[team]]\nname = \"payments\"\ntoken = \"tok-p\"\n[[team]]\nname = \"kyc\"\ntoken = \"tok-k\"\n";

    #[test]
    fn accepts_bearer_and_basic_team_credentials() {
        let c = callers(TWO_TEAMS);
        assert_eq!(
            &*c.identify(Some(b"Bearer tok-k")).unwrap().team_name,
            "kyc"
        );
        assert_eq!(
            &*c.identify(Some(basic("payments", "tok-p").as_bytes()))
                .unwrap()
                .team_name,
            "payments"
        );
        assert_eq!(
            &*c.identify(Some(b"bearer  tok-p ")).unwrap().team_name,
            "payments"
        );
    }

    #[test]
    fn refuses_unknown_or_mismatched_credentials() {
        let c = callers(TWO_TEAMS);
        for bad in [
            None,
            Some("Bearer nope".to_string()),
            Some("Bearer tok-p-longer".to_string()),
            Some(basic("kyc", "tok-p")),
            Some("Basic !!!".to_string()),
            Some("Digest tok-p".to_string()),
            Some("Bearer".to_string()),
        ] {
            let err = c.identify(bad.as_deref().map(str::as_bytes)).unwrap_err();
            assert!(matches!(err, GatewayError::Unauthorized), "{bad:?}");
        }
    }

    #[test]
    fn finds_a_team_among_a_thousand() {
        let teams: String = (0..1000)
            .map(|i| format!("[[team]]\nname = \"t{i}\"\ntoken = \"tok-{i}\"\n"))
            .collect();
        let c = callers(&teams);
        assert_eq!(
            &*c.identify(Some(b"Bearer tok-999")).unwrap().team_name,
            "t999"
        );
        let named = basic("t7", "tok-7");
        assert_eq!(
            &*c.identify(Some(named.as_bytes())).unwrap().team_name,
            "t7"
        );
        assert!(c.identify(Some(basic("t8", "tok-7").as_bytes())).is_err());
        assert!(c.identify(Some(b"Bearer tok-1000")).is_err());
    }

    #[test]
    fn tokenless_team_takes_requests_without_matching_credentials() {
        let c = callers("[[team]]\nname = \"app\"\n[[team]]\nname = \"ops\"\ntoken = \"t\"\n");
        assert_eq!(&*c.identify(None).unwrap().team_name, "app");
        assert_eq!(
            &*c.identify(Some(basic("old-idenfy-key", "old-secret").as_bytes()))
                .unwrap()
                .team_name,
            "app"
        );
        assert_eq!(&*c.identify(Some(b"Bearer t")).unwrap().team_name, "ops");
    }

    #[test]
    fn a_sidecar_without_tokens_takes_every_request_whatever_it_presents() {
        let c = callers("[[team]]\nname = \"app\"\n");
        for auth in [
            None,
            Some(&b"Bearer anything"[..]),
            Some(b"Basic !!not-base64"),
            Some(b"garbage"),
        ] {
            assert_eq!(&*c.identify(auth).unwrap().team_name, "app");
        }
    }

    #[test]
    fn identifies_a_request_by_its_authorization_header() {
        let c = callers("[[team]]\nname = \"app\"\n[[team]]\nname = \"ops\"\ntoken = \"t\"\n");
        let mut headers = http::HeaderMap::new();
        assert_eq!(&*c.identify_request(&headers).unwrap().team_name, "app");
        headers.insert(http::header::AUTHORIZATION, "Bearer t".parse().unwrap());
        assert_eq!(&*c.identify_request(&headers).unwrap().team_name, "ops");
    }
}
