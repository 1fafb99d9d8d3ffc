//! The check goes through a proxy: the configured one, else `CELLS_UPDATE_HTTP_PROXY` (from
//! the daemon's environment, handed to the network helper). (One test per process: it sets
//! an environment variable.)

mod support;

use cells_updater::net::ProxySettings;
use cells_updater::update_server::{check, ServerSettings, UpdateRequest};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn check_uses_the_configured_then_the_environment_proxy() {
    let proxy = TestServer::start();
    proxy.set_catalog(
        200,
        r#"{"Channel":"stable","AvailableBinaries":[{"Version":"4.4.5","BinarySize":"10"}]}"#,
    );
    let req = UpdateRequest::new(
        cells_updater::package::Channel::Stable,
        cells_updater::package::Package::Home,
        "4.4.2",
    );
    // An origin that does not resolve: only the proxy can answer.
    let origin = "http://updates.invalid/";

    let runner = fork_runner();
    let settings = |proxy: Option<String>| ServerSettings {
        url: origin.into(),
        timeout: Duration::from_secs(5),
        proxy: ProxySettings { proxy },
        download_hosts: Vec::new(),
    };
    let resp = check(
        &runner,
        &settings(Some(format!("http://{}", proxy.addr))),
        &req,
    )
    .await
    .expect("via configured proxy");
    assert_eq!(resp.available_binaries[0].version, "4.4.5");
    assert_eq!(
        proxy.requests().last().unwrap().path,
        "http://updates.invalid/a/update-server/"
    );

    std::env::set_var("CELLS_UPDATE_HTTP_PROXY", format!("http://{}", proxy.addr));
    let before = proxy.requests().len();
    check(&runner, &settings(None), &req)
        .await
        .expect("via CELLS_UPDATE_HTTP_PROXY");
    assert_eq!(proxy.requests().len(), before + 1);

    std::env::remove_var("CELLS_UPDATE_HTTP_PROXY");
    let err = check(&runner, &settings(None), &req).await.unwrap_err();
    assert_eq!(err.name(), "ServerError");
    assert!(
        err.message().contains("cannot reach the update server"),
        "{err}"
    );
}
