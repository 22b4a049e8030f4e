//! Every API request the operator makes is counted by verb (`aienv_kube_requests_total`), so an
//! operator that reads or writes more than it should shows on a dashboard, and the tests can
//! count what one reconcile costs.

use http::{Method, Request};
use kube::{Client, client::Body};

use super::metrics::Metrics;

/// The verb of a request as the API server's audit log names it; `get` covers get and list (the
/// path alone does not tell them apart without discovery).
pub fn verb(method: &Method, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        Method::GET if watching => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// `client`, counting each request in `metrics` before it is sent.
pub fn counted(client: Client, metrics: Metrics) -> Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: Request<Body>| {
        metrics.kube_request(verb(req.method(), req.uri().query()));
        let inner = client.clone();
        async move { inner.send(req).await }
    });
    Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_like_the_audit_log_names_them() {
        assert_eq!(verb(&Method::GET, Some("labelSelector=a%3Db")), "get");
        assert_eq!(verb(&Method::GET, None), "get");
        assert_eq!(
            verb(&Method::GET, Some("resourceVersion=1&watch=true")),
            "watch"
        );
        assert_eq!(
            verb(&Method::PATCH, Some("fieldManager=x&force=true")),
            "patch"
        );
        assert_eq!(verb(&Method::POST, None), "create");
        assert_eq!(verb(&Method::DELETE, None), "delete");
    }
}
