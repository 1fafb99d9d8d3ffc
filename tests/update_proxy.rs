//! The check goes through a proxy: the configured one, else `CELLS_UPDATE_HTTP_PROXY`.
//! (One test per process: it sets an environment variable.)

mod support;

use cells_updater::update_server::{check, http_client, HttpSettings, UpdateRequest};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn check_uses_the_configured_then_the_environment_proxy() {
    let proxy = TestServer::start();
    proxy.set_catalog(
        200,
        r#"{"Channel":"stable","AvailableBinaries":[{"Version":"4.4.5","BinarySize":"10"}]}"#,
    );
    let req = UpdateRequest::new("stable", "PydioHome", "4.4.2");
    // An origin that does not resolve: only the proxy can answer.
    let origin = "http://updates.invalid/";

    let client = http_client(&HttpSettings {
        proxy: Some(format!("http://{}", proxy.addr)),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let resp = check(&client, origin, &req, Duration::from_secs(5))
        .await
        .expect("via configured proxy");
    assert_eq!(resp.available_binaries[0].version, "4.4.5");
    assert_eq!(
        proxy.requests().last().unwrap().path,
        "http://updates.invalid/a/update-server/"
    );

    std::env::set_var("CELLS_UPDATE_HTTP_PROXY", format!("http://{}", proxy.addr));
    let client = http_client(&HttpSettings {
        proxy: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let before = proxy.requests().len();
    check(&client, origin, &req, Duration::from_secs(5))
        .await
        .expect("via CELLS_UPDATE_HTTP_PROXY");
    assert_eq!(proxy.requests().len(), before + 1);

    std::env::remove_var("CELLS_UPDATE_HTTP_PROXY");
    let client = http_client(&HttpSettings {
        proxy: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = check(&client, origin, &req, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ServerError");
    assert!(
        err.message().contains("cannot reach the update server"),
        "{err}"
    );
}
