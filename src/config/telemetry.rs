//! `[telemetry]`: the optional OTLP span export. The endpoint is a plain `http://` base URL
//! (the exporter's client speaks no TLS: a collector beside the gateway, or an agent on the
//! node); a build without the `otlp` feature refuses the key rather than ignore it.

use super::load::Problems;
use super::raw::RawTelemetry;
use super::{Otlp, Telemetry};

/// The path OTLP/HTTP receivers take traces on (OTLP specification, "OTLP/HTTP Request").
const TRACES_PATH: &str = "/v1/traces";

pub(super) fn telemetry(p: &mut Problems, raw: &RawTelemetry) -> Telemetry {
    let Some(endpoint) = raw.otlp_endpoint.as_deref() else {
        return Telemetry::default();
    };
    if !cfg!(feature = "otlp") {
        p.add(
            "telemetry.otlp_endpoint",
            "otlp_endpoint needs a build with the `otlp` feature",
        );
        return Telemetry::default();
    }
    if raw.otlp_service_name.trim().is_empty() {
        p.add("telemetry.otlp_service_name", "must not be empty");
    }
    let traces_url = p.check("telemetry.otlp_endpoint", traces_url(endpoint));
    Telemetry {
        otlp: traces_url.map(|traces_url| Otlp {
            traces_url,
            service_name: raw.otlp_service_name.clone(),
        }),
    }
}

/// `endpoint` (`http://host:port`, maybe with a path prefix) + [`TRACES_PATH`].
fn traces_url(endpoint: &str) -> Result<String, String> {
    let bad =
        || format!("expected an http:// URL like \"http://127.0.0.1:4318\", got {endpoint:?}");
    let uri: http::Uri = endpoint.parse().map_err(|_| bad())?;
    let plain = uri.scheme_str() == Some("http") && uri.host().is_some_and(|h| !h.is_empty());
    if !plain || uri.query().is_some() || uri.authority().is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(bad());
    }
    Ok(format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_the_endpoint() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://collector:4318/otel/").as_deref(),
            Ok("http://collector:4318/otel/v1/traces")
        );
    }

    #[test]
    fn refuses_what_the_plain_http_client_cannot_reach() {
        for bad in [
            "",
            "127.0.0.1:4318",
            "https://collector:4318",
            "grpc://collector:4317",
            "http://user:pw@collector:4318",
            "http://collector:4318/?x=1",
        ] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}
