//! What every HTTP-based sink shares: one client, and which answers are worth a retry.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::NotifyError;

/// The HTTP client every sink shares (connection reuse). It has no total timeout of its own:
/// the delivery loop bounds each attempt. It follows no redirect: a token or secret header
/// must never go to a host the config does not name, so a 3xx is a failed delivery.
///
/// # Errors
/// When the TLS stack cannot be set up.
pub fn client() -> reqwest::Result<reqwest::Client> {
    // reqwest is built without a default provider (one TLS stack for the whole hub).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("warren-hub/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The longest `Retry-After` honoured: a service asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Sends `request` once and returns the response if it is a 2xx: a network error, 408, 429 or
/// 5xx is transient (throttled, when a 429 or 503 says `Retry-After`); any other status is
/// permanent. `what` names the endpoint in errors; the URL is left out (those of chat and
/// push services carry tokens).
///
/// # Errors
/// See above.
pub async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::Response, NotifyError> {
    let response = request
        .send()
        .await
        .map_err(|e| NotifyError::Transient(format!("{what}: {}", e.without_url())))?;
    let status = response.status();
    match classify(status) {
        Ok(()) => Ok(response),
        Err(e) => {
            let wait = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then(|| retry_after(response.headers()))
            .flatten();
            // The service's own words help the operator fix a token or a parameter.
            let said = response.text().await.unwrap_or_default();
            let said: String = said.trim().chars().take(200).collect();
            let m = if said.is_empty() {
                format!("{what}: {e}")
            } else {
                format!("{what}: {e}: {said:?}")
            };
            Err(match (e, wait) {
                (NotifyError::Permanent(_), _) => NotifyError::Permanent(m),
                (_, Some(wait)) => NotifyError::Throttled(m, wait),
                (_, None) => NotifyError::Transient(m),
            })
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What an HTTP status means for a delivery.
///
/// # Errors
/// Transient for 408, 429 and 5xx; permanent for any other non-2xx.
pub fn classify(status: StatusCode) -> Result<(), NotifyError> {
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(NotifyError::Permanent(format!(
            "HTTP {status}: redirects are not followed; configure the final URL"
        )))
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(NotifyError::Transient(format!("HTTP {status}")))
    } else {
        Err(NotifyError::Permanent(format!("HTTP {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        h.insert(RETRY_AFTER, soon.parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_classes() {
        assert!(classify(StatusCode::NO_CONTENT).is_ok());
        for transient in [408, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(transient).unwrap();
            assert!(matches!(classify(s), Err(NotifyError::Transient(_))), "{s}");
        }
        for permanent in [301, 400, 401, 403, 404, 410] {
            let s = StatusCode::from_u16(permanent).unwrap();
            assert!(matches!(classify(s), Err(NotifyError::Permanent(_))), "{s}");
        }
    }
}
