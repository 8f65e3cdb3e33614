//! The SDK against a session older than itself, which speaks only protocol 1 and refuses an
//! offer of 2: the SDK says `hello` again offering 1 on the same connection, then
//! acknowledges every push with its own `push_ack`, as protocol 1 has it. The session here is
//! a script on a real WebSocket that answers as such a session answers (`docs/protocol.md`).

use std::time::Duration;

use anyhow::{bail, Context};
use client_sdk::{Client, ClientConfig};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const WAIT: Duration = Duration::from_secs(10);

/// The next text frame from the client other than a ping, as JSON.
async fn next_frame(ws: &mut WebSocketStream<TcpStream>) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no frame from the client")?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["type"] != "ping" {
                    return Ok(v);
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("read error: {e}"),
            None => bail!("the client closed the connection"),
        }
    }
}

async fn send(ws: &mut WebSocketStream<TcpStream>, frame: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(frame.to_string().into())).await?;
    Ok(())
}

/// Plays a protocol-1 session for one client: refuses `hello` offering 2, welcomes the one
/// offering 1, acknowledges a subscription, pushes it two versions in two frames and returns
/// the acknowledgements that came back.
async fn protocol_1_session(listener: TcpListener) -> anyhow::Result<Vec<Value>> {
    let (tcp, _) = listener.accept().await?;
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    let hello = next_frame(&mut ws).await?;
    if (&hello["type"], &hello["protocol"]) != (&json!("hello"), &json!(2)) {
        bail!("expected a hello offering 2, got {hello}");
    }
    send(
        &mut ws,
        json!({"type": "error", "reqId": hello["reqId"], "code": "unsupported_protocol",
               "message": "protocol version 2 is not supported (this server speaks 1)"}),
    )
    .await?;
    let hello = next_frame(&mut ws).await?;
    if (&hello["type"], &hello["protocol"]) != (&json!("hello"), &json!(1)) {
        bail!("expected a hello offering 1, got {hello}");
    }
    send(
        &mut ws,
        json!({"type": "welcome", "reqId": hello["reqId"], "protocol": 1, "connId": 1,
               "sessionId": "old-session", "maxFrameBytes": 1_048_576}),
    )
    .await?;
    let sub = next_frame(&mut ws).await?;
    if sub["type"] != "register_subscriber" {
        bail!("expected a subscription, got {sub}");
    }
    send(&mut ws, json!({"type": "ack", "reqId": sub["reqId"]})).await?;
    for (push_id, version) in [(1, 5), (2, 6)] {
        send(
            &mut ws,
            json!({"type": "push", "pushId": push_id, "registId": sub["registId"],
                   "dataInfoId": "svc.old#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP",
                   "version": version, "data": [format!("v{version}")]}),
        )
        .await?;
    }
    let mut acks = Vec::new();
    while acks.len() < 2 {
        acks.push(next_frame(&mut ws).await?);
    }
    Ok(acks)
}

#[tokio::test]
async fn an_older_session_is_spoken_to_in_protocol_1() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let session = tokio::spawn(protocol_1_session(listener));
    let client = Client::connect(ClientConfig::new([addr])).await?;
    let mut sub = client.subscribe("svc.old").await?;
    let latest = tokio::time::timeout(WAIT, async {
        loop {
            match sub.next().await {
                Some(u) if u.version == 6 => return Ok(u),
                Some(_) => continue,
                None => bail!("the subscription ended"),
            }
        }
    })
    .await
    .context("version 6 never reached the subscriber")??;
    assert_eq!(latest.data, vec!["v6".to_string()]);
    let acks = session.await??;
    assert_eq!(
        acks,
        vec![
            json!({"type": "push_ack", "pushId": 1}),
            json!({"type": "push_ack", "pushId": 2})
        ]
    );
    client.close().await;
    Ok(())
}
