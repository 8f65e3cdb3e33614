//! A bare WebSocket client that speaks the JSON protocol by hand: it sends whatever text it
//! is given (valid or not) and records every frame the server sends, acknowledging pushes.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_req: u64,
    /// Acknowledge pushes as they arrive.
    pub auto_ack: bool,
}

/// How the server ended the connection.
#[derive(Debug)]
pub struct Closed {
    pub code: Option<CloseCode>,
    pub reason: String,
}

impl RawClient {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .context("websocket connect")?;
        Ok(Self {
            ws,
            next_req: 0,
            auto_ack: true,
        })
    }

    /// Connects from the loopback address `local_ip` (Linux routes all of 127/8 to `lo`), so
    /// the session sees this client at an address of its own.
    pub async fn connect_from(addr: &str, local_ip: std::net::IpAddr) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(local_ip, 0))?;
        let tcp = socket.connect(addr.parse()?).await.context("tcp connect")?;
        let (ws, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/ws"), MaybeTlsStream::Plain(tcp))
                .await
                .context("websocket connect")?;
        Ok(Self {
            ws,
            next_req: 0,
            auto_ack: true,
        })
    }

    /// Connects and completes `hello` as `client_id`.
    pub async fn hello(addr: &str, client_id: &str) -> anyhow::Result<Self> {
        let mut c = Self::connect(addr).await?;
        let reply = c
            .request(json!({"type": "hello", "protocol": 1, "clientId": client_id}))
            .await?;
        if reply["type"] != "welcome" {
            bail!("expected welcome, got {reply}");
        }
        Ok(c)
    }

    /// Connects and sends `hello` as `client_id` with the given `auth` field (signed, forged,
    /// or replayed); returns the connection and the server's reply.
    pub async fn hello_with_auth(
        addr: &str,
        client_id: &str,
        auth: Option<&registry_common::auth::HelloAuth>,
    ) -> anyhow::Result<(Self, Value)> {
        let mut c = Self::connect(addr).await?;
        let mut hello = json!({"type": "hello", "protocol": 1, "clientId": client_id});
        if let Some(auth) = auth {
            hello["auth"] = serde_json::to_value(auth)?;
        }
        let reply = c.request(hello).await?;
        Ok((c, reply))
    }

    /// Connects and completes `hello` as `client_id`, signed with `key`.
    pub async fn hello_signed(
        addr: &str,
        client_id: &str,
        key: &registry_common::auth::Credential,
    ) -> anyhow::Result<Self> {
        let auth = key.sign_hello(client_id);
        let (c, reply) = Self::hello_with_auth(addr, client_id, Some(&auth)).await?;
        if reply["type"] != "welcome" {
            bail!("expected welcome, got {reply}");
        }
        Ok(c)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    /// Sends any WebSocket message: a binary frame, a ping, a hand-made frame.
    pub async fn send_message(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// Sends one text message split over one WebSocket frame per part (a first text frame,
    /// then continuation frames, the last one final).
    pub async fn send_fragmented(&mut self, parts: &[&str]) -> anyhow::Result<()> {
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.iter().enumerate() {
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            let frame = Frame::message(part.as_bytes().to_vec(), OpCode::Data(opcode), i == last);
            self.ws.feed(Message::Frame(frame)).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Sends `frame` with a fresh `reqId` and returns the reply carrying that id.
    pub async fn request(&mut self, mut frame: Value) -> anyhow::Result<Value> {
        self.next_req += 1;
        let id = self.next_req;
        frame["reqId"] = json!(id);
        self.send_text(frame.to_string()).await?;
        loop {
            let f = self.next_frame(Duration::from_secs(5)).await?;
            if f["reqId"] == json!(id) {
                return Ok(f);
            }
        }
    }

    /// The next frame from the server (pushes acknowledged if `auto_ack`).
    pub async fn next_frame(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .context("no frame within the timeout")?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if self.auto_ack && v["type"] == "push" {
                        let ack = json!({"type": "push_ack", "pushId": v["pushId"]});
                        self.send_text(ack.to_string()).await?;
                    }
                    return Ok(v);
                }
                Some(Ok(Message::Close(f))) => {
                    bail!("closed: {:?}", f.map(|f| (f.code, f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("read error: {e}"),
                None => bail!("connection ended"),
            }
        }
    }

    /// The next push frame, skipping other frames.
    pub async fn next_push(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        loop {
            let f = self.next_frame(timeout).await?;
            if f["type"] == "push" {
                return Ok(f);
            }
        }
    }

    /// The server's close frame, which must be the next message (control frames aside).
    pub async fn next_is_close(&mut self, timeout: Duration) -> anyhow::Result<Closed> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .context("not closed within the timeout")?;
            match msg {
                Some(Ok(Message::Close(f))) => {
                    return Ok(Closed {
                        code: f.as_ref().map(|f| f.code),
                        reason: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    })
                }
                Some(Ok(Message::Text(t))) => bail!("a frame before the close: {t}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("read error: {e}"),
                None => bail!("connection ended without a close frame"),
            }
        }
    }

    /// Reads until the server closes the connection; returns its close frame.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<Closed> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .context("not closed within the timeout")?;
            match msg {
                Some(Ok(Message::Close(f))) => {
                    return Ok(Closed {
                        code: f.as_ref().map(|f| f.code),
                        reason: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    return Ok(Closed {
                        code: None,
                        reason: String::new(),
                    })
                }
            }
        }
    }
}
