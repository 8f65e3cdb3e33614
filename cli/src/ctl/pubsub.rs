//! `registryctl pub` and `registryctl sub`: an SDK client from the terminal, moving between
//! the given sessions like any other client.

use client_sdk::{Client, ClientConfig, ConnectionState, RegistrationOptions};
use registry_rpc::runtime::shutdown_on_signal;
use serde_json::json;

use super::target::Ctx;

fn client_config(ctx: &Ctx) -> ClientConfig {
    let sessions: Vec<String> = ctx
        .globals
        .session
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut config = ClientConfig::new(sessions);
    config.credential = ctx.key.clone();
    config.tls = ctx.tls.clone();
    config
}

/// Resolves once the sessions keep refusing the client's credential (e.g. its key was
/// revoked).
async fn refused(client: &Client) -> String {
    let mut state = client.connection_state();
    let error = match state
        .wait_for(|s| matches!(s, ConnectionState::Refused { .. }))
        .await
    {
        Ok(s) => match &*s {
            ConnectionState::Refused { error } => Some(error.to_string()),
            _ => None,
        },
        Err(_) => None,
    };
    match error {
        Some(e) => e,
        // The client closed: nothing will be refused any more.
        None => std::future::pending().await,
    }
}

/// Publishes `data` under `data_id` until Ctrl-C, then unregisters.
pub async fn publish(
    ctx: &Ctx,
    data_id: &str,
    data: Vec<String>,
    options: RegistrationOptions,
) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let client = Client::connect(client_config(ctx)).await?;
    let publisher = client.publish_with(data_id, data, options).await?;
    eprintln!(
        "published {data_id} (registId {}); Ctrl-C to unregister",
        publisher.regist_id()
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        error = refused(&client) => anyhow::bail!("credential refused: {error}"),
    }
    publisher.unregister().await?;
    eprintln!("unregistered");
    client.close().await;
    Ok(())
}

/// Subscribes to `data_id` and prints one JSON line per push until Ctrl-C.
pub async fn subscribe(
    ctx: &Ctx,
    data_id: &str,
    options: RegistrationOptions,
) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let client = Client::connect(client_config(ctx)).await?;
    let mut sub = client.subscribe_with(data_id, options, None).await?;
    loop {
        tokio::select! {
            update = sub.next() => {
                let Some(u) = update else { break };
                println!("{}", json!({"dataInfoId": u.data_info_id, "version": u.version, "data": u.data}));
            }
            _ = shutdown.cancelled() => break,
            error = refused(&client) => anyhow::bail!("credential refused: {error}"),
        }
    }
    client.close().await;
    Ok(())
}
