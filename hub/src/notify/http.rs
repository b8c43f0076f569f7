//! What every HTTP-based sink shares: one client, and which answers are worth a retry.

use reqwest::StatusCode;

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

/// Sends `request` once: a 2xx is delivered; a network error, 408, 429 or 5xx is transient;
/// any other status is permanent. `what` names the endpoint in errors; the URL is left out
/// (those of chat and push services carry tokens).
///
/// # Errors
/// See above.
pub async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<(), NotifyError> {
    let response = request
        .send()
        .await
        .map_err(|e| NotifyError::Transient(format!("{what}: {}", e.without_url())))?;
    classify(response.status()).map_err(|e| match e {
        NotifyError::Transient(m) => NotifyError::Transient(format!("{what}: {m}")),
        NotifyError::Permanent(m) => NotifyError::Permanent(format!("{what}: {m}")),
    })
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
