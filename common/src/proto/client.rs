//! SDK <-> SessionServer frames.
//!
//! Every frame is a JSON object with a `type` field (snake_case) and camelCase fields. Client
//! requests carry a `reqId` that the server echoes in its `ack` or `error`. A connection starts
//! with `hello`, which offers a protocol version; the server answers `welcome` with the
//! version both speak and the connection id it assigned.
//!
//! Protocol 2 adds batching to protocol 1: a session may send several pushes queued for one
//! connection as one `pushes` frame, and the client acknowledges every push it has at hand
//! with one `push_acks` frame. A protocol-1 connection gets one `push` frame per push and
//! acknowledges each with `push_ack`, as before.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::id::DataInfoId;

/// Highest protocol version spoken by this build (offered by the SDK, answered by sessions).
pub const PROTOCOL_VERSION: u32 = 2;

/// Oldest protocol version a session still serves.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// First version with `pushes` and `push_acks`.
pub const BATCHING_PROTOCOL_VERSION: u32 = 2;

/// Most push ids one `push_acks` frame may carry; a client with more sends several frames.
pub const MAX_PUSH_ACKS: usize = 1024;

/// The version a connection speaks when a client offers `offered`: the highest both sides
/// speak, or `None` when the client only speaks versions older than any served.
pub fn negotiate(offered: u32) -> Option<u32> {
    (offered >= OLDEST_PROTOCOL_VERSION).then(|| offered.min(PROTOCOL_VERSION))
}

/// WebSocket close code a client ends a connection with when it leaves for another session
/// while still alive (the session went silent to it, or its writes stalled). The session then
/// leaves the client's publishers in the data tier for its re-registration elsewhere (the
/// handover grace) instead of withdrawing them: the connection may reach a session that was
/// frozen only after the client registered again, or before.
pub const CLOSE_MOVING: u16 = 4000;

/// Frames the SDK sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ClientFrame {
    /// First frame on a connection.
    Hello {
        req_id: u64,
        protocol: u32,
        /// Random id of the SDK instance, stable across its reconnects.
        client_id: String,
        #[serde(default)]
        zone: String,
        #[serde(default)]
        app: String,
        /// Proof that the client holds an access key (required when the cluster has auth on).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<crate::auth::HelloAuth>,
    },
    /// Register, or replace with a higher `version`, one publisher.
    RegisterPublisher {
        req_id: u64,
        regist_id: String,
        data_id: String,
        #[serde(default)]
        instance_id: Option<String>,
        #[serde(default)]
        group: Option<String>,
        data: Vec<String>,
        #[serde(default)]
        version: u64,
    },
    UnregisterPublisher {
        req_id: u64,
        regist_id: String,
    },
    RegisterSubscriber {
        req_id: u64,
        regist_id: String,
        data_id: String,
        #[serde(default)]
        instance_id: Option<String>,
        #[serde(default)]
        group: Option<String>,
        /// Highest datum version the SDK already holds (after a reconnect); the session will
        /// not push anything at or below it.
        #[serde(default)]
        known_version: u64,
    },
    UnregisterSubscriber {
        req_id: u64,
        regist_id: String,
    },
    /// Acknowledges a `push`.
    PushAck {
        push_id: u64,
    },
    /// Acknowledges several pushes at once (protocol 2; at most [`MAX_PUSH_ACKS`] ids).
    PushAcks {
        push_ids: Vec<u64>,
    },
    Ping {
        req_id: u64,
    },
}

/// The `type` values of [`ClientFrame`], for telling "unknown type" from "bad fields".
const CLIENT_TYPES: &[&str] = &[
    "hello",
    "register_publisher",
    "unregister_publisher",
    "register_subscriber",
    "unregister_subscriber",
    "push_ack",
    "push_acks",
    "ping",
];

/// A frame that could not be decoded: the error to answer with, and the request id if the
/// frame had a readable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub req_id: Option<u64>,
    pub error: ApiError,
}

impl ClientFrame {
    /// The JSON of `PushAck { push_id }`, written directly: the SDK sends one per push.
    pub fn push_ack_json(push_id: u64) -> String {
        format!(r#"{{"type":"push_ack","pushId":{push_id}}}"#)
    }

    /// The JSON of `PushAcks { push_ids }`, written directly.
    pub fn push_acks_json(push_ids: &[u64]) -> String {
        let mut text = String::with_capacity(32 + push_ids.len() * 8);
        text.push_str(r#"{"type":"push_acks","pushIds":["#);
        for (i, id) in push_ids.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&id.to_string());
        }
        text.push_str("]}");
        text
    }

    /// Decodes one text frame, classifying failures as malformed JSON, unknown message
    /// type, or a known type with bad fields.
    ///
    /// Decoding goes through [`WireClientFrame`], a plain struct with every field of every
    /// frame type: serde's internally tagged enums buffer the whole frame before they can
    /// dispatch on the tag, which costs more than the rest of a frame's handling.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let wire: WireClientFrame = match serde_json::from_str(text) {
            Ok(w) => w,
            Err(err) => return Err(Self::diagnose(text, err)),
        };
        let req_id = wire.req_id;
        wire.into_frame()
            .map_err(|error| DecodeError { req_id, error })
    }

    fn diagnose(text: &str, err: serde_json::Error) -> DecodeError {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return DecodeError {
                    req_id: None,
                    error: ApiError::new(ErrorCode::Malformed, format!("not JSON: {e}")),
                }
            }
        };
        let req_id = value.get("reqId").and_then(serde_json::Value::as_u64);
        let error = match value.get("type").and_then(serde_json::Value::as_str) {
            None => ApiError::new(ErrorCode::Malformed, "frame has no string `type` field"),
            Some(t) if !CLIENT_TYPES.contains(&t) => ApiError::new(
                ErrorCode::UnknownMessage,
                format!(
                    "unknown message type `{}`",
                    t.chars().take(64).collect::<String>()
                ),
            ),
            Some(t) => ApiError::new(ErrorCode::Malformed, format!("bad `{t}` frame: {err}")),
        };
        DecodeError { req_id, error }
    }

    /// The request id, for frames that have one.
    pub fn req_id(&self) -> Option<u64> {
        match self {
            ClientFrame::Hello { req_id, .. }
            | ClientFrame::RegisterPublisher { req_id, .. }
            | ClientFrame::UnregisterPublisher { req_id, .. }
            | ClientFrame::RegisterSubscriber { req_id, .. }
            | ClientFrame::UnregisterSubscriber { req_id, .. }
            | ClientFrame::Ping { req_id } => Some(*req_id),
            ClientFrame::PushAck { .. } | ClientFrame::PushAcks { .. } => None,
        }
    }
}

/// Every field any client frame has, for decoding without buffering (see
/// [`ClientFrame::decode`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireClientFrame {
    #[serde(rename = "type")]
    kind: String,
    req_id: Option<u64>,
    protocol: Option<u32>,
    client_id: Option<String>,
    zone: Option<String>,
    app: Option<String>,
    auth: Option<crate::auth::HelloAuth>,
    regist_id: Option<String>,
    data_id: Option<String>,
    instance_id: Option<String>,
    group: Option<String>,
    data: Option<Vec<String>>,
    version: Option<u64>,
    known_version: Option<u64>,
    push_id: Option<u64>,
    push_ids: Option<Vec<u64>>,
}

impl WireClientFrame {
    fn into_frame(self) -> Result<ClientFrame, ApiError> {
        let kind = self.kind;
        let missing = |field: &str| {
            ApiError::new(
                ErrorCode::Malformed,
                format!("bad `{kind}` frame: missing field `{field}`"),
            )
        };
        let req_id = self.req_id.ok_or_else(|| missing("reqId"));
        let regist_id = self.regist_id.ok_or_else(|| missing("registId"));
        Ok(match kind.as_str() {
            "hello" => ClientFrame::Hello {
                req_id: req_id?,
                protocol: self.protocol.ok_or_else(|| missing("protocol"))?,
                client_id: self.client_id.ok_or_else(|| missing("clientId"))?,
                zone: self.zone.unwrap_or_default(),
                app: self.app.unwrap_or_default(),
                auth: self.auth,
            },
            "register_publisher" => ClientFrame::RegisterPublisher {
                req_id: req_id?,
                regist_id: regist_id?,
                data_id: self.data_id.ok_or_else(|| missing("dataId"))?,
                instance_id: self.instance_id,
                group: self.group,
                data: self.data.ok_or_else(|| missing("data"))?,
                version: self.version.unwrap_or_default(),
            },
            "unregister_publisher" => ClientFrame::UnregisterPublisher {
                req_id: req_id?,
                regist_id: regist_id?,
            },
            "register_subscriber" => ClientFrame::RegisterSubscriber {
                req_id: req_id?,
                regist_id: regist_id?,
                data_id: self.data_id.ok_or_else(|| missing("dataId"))?,
                instance_id: self.instance_id,
                group: self.group,
                known_version: self.known_version.unwrap_or_default(),
            },
            "unregister_subscriber" => ClientFrame::UnregisterSubscriber {
                req_id: req_id?,
                regist_id: regist_id?,
            },
            "push_ack" => ClientFrame::PushAck {
                push_id: self.push_id.ok_or_else(|| missing("pushId"))?,
            },
            "push_acks" => {
                let push_ids = self.push_ids.ok_or_else(|| missing("pushIds"))?;
                if push_ids.len() > MAX_PUSH_ACKS {
                    return Err(ApiError::new(
                        ErrorCode::Malformed,
                        format!(
                            "bad `push_acks` frame: {} ids, at most {MAX_PUSH_ACKS}",
                            push_ids.len()
                        ),
                    ));
                }
                ClientFrame::PushAcks { push_ids }
            }
            "ping" => ClientFrame::Ping { req_id: req_id? },
            other => {
                return Err(ApiError::new(
                    ErrorCode::UnknownMessage,
                    format!(
                        "unknown message type `{}`",
                        other.chars().take(64).collect::<String>()
                    ),
                ))
            }
        })
    }
}

/// Every field any server frame has, for decoding without buffering (see
/// [`ServerFrame::decode`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireServerFrame {
    #[serde(rename = "type")]
    kind: String,
    req_id: Option<u64>,
    protocol: Option<u32>,
    conn_id: Option<u64>,
    session_id: Option<String>,
    max_frame_bytes: Option<usize>,
    code: Option<ErrorCode>,
    message: Option<String>,
    epoch: Option<u64>,
    redirect: Option<String>,
    push_id: Option<u64>,
    regist_id: Option<String>,
    data_info_id: Option<DataInfoId>,
    version: Option<u64>,
    data: Option<Vec<String>>,
    reason: Option<String>,
    sessions: Option<Vec<String>>,
    pushes: Option<Vec<Push>>,
}

impl ServerFrame {
    /// Decodes one frame from a session (the SDK's side of [`ClientFrame::decode`]).
    pub fn decode(text: &str) -> Result<Self, String> {
        let w: WireServerFrame = serde_json::from_str(text).map_err(|e| e.to_string())?;
        // Moved out field by field: a push's data is the bulk of the frame.
        let WireServerFrame {
            kind,
            req_id,
            protocol,
            conn_id,
            session_id,
            max_frame_bytes,
            code,
            message,
            epoch,
            redirect,
            push_id,
            regist_id,
            data_info_id,
            version,
            data,
            reason,
            sessions,
            pushes,
        } = w;
        let missing = |field: &str| format!("`{kind}` frame without `{field}`");
        let need_req_id = || req_id.ok_or_else(|| missing("reqId"));
        Ok(match kind.as_str() {
            "push" => ServerFrame::Push(Push {
                push_id: push_id.ok_or_else(|| missing("pushId"))?,
                regist_id: regist_id.ok_or_else(|| missing("registId"))?,
                data_info_id: data_info_id.ok_or_else(|| missing("dataInfoId"))?,
                version: version.ok_or_else(|| missing("version"))?,
                data: data.unwrap_or_default(),
            }),
            "pushes" => ServerFrame::Pushes {
                pushes: pushes.ok_or_else(|| missing("pushes"))?,
            },
            "ack" => ServerFrame::Ack {
                req_id: need_req_id()?,
            },
            "pong" => ServerFrame::Pong {
                req_id: need_req_id()?,
            },
            "welcome" => ServerFrame::Welcome {
                req_id: need_req_id()?,
                protocol: protocol.ok_or_else(|| missing("protocol"))?,
                conn_id: conn_id.ok_or_else(|| missing("connId"))?,
                session_id: session_id.unwrap_or_default(),
                max_frame_bytes: max_frame_bytes.unwrap_or_default(),
            },
            "error" => ServerFrame::Error {
                req_id,
                error: ApiError {
                    code: code.ok_or_else(|| missing("code"))?,
                    message: message.unwrap_or_default(),
                    epoch,
                    redirect,
                },
            },
            "go_away" => ServerFrame::GoAway {
                reason: reason.unwrap_or_default(),
                sessions: sessions.unwrap_or_default(),
            },
            other => return Err(format!("unknown frame type `{other}`")),
        })
    }
}

/// Frames the session sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    Welcome {
        req_id: u64,
        protocol: u32,
        /// Connection id assigned by the session; unique within it.
        conn_id: u64,
        /// Member id of the session server.
        session_id: String,
        /// Largest frame the session accepts, in bytes.
        max_frame_bytes: usize,
    },
    Ack {
        req_id: u64,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req_id: Option<u64>,
        #[serde(flatten)]
        error: ApiError,
    },
    /// The full datum of one dataInfoId for one subscription. Acknowledge with `push_ack`
    /// (or, on protocol 2, `push_acks`).
    Push(Push),
    /// Several pushes queued for one connection, in the order they were queued (protocol 2).
    Pushes {
        pushes: Vec<Push>,
    },
    Pong {
        req_id: u64,
    },
    /// The session is going away; reconnect to one of `sessions` (or any other you know).
    GoAway {
        reason: String,
        #[serde(default)]
        sessions: Vec<String>,
    },
}

/// One push: the full datum of one dataInfoId for one subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Push {
    pub push_id: u64,
    /// The subscription (`registId` of `register_subscriber`) this push is for.
    pub regist_id: String,
    pub data_info_id: DataInfoId,
    pub version: u64,
    /// Every publisher's data strings.
    #[serde(default)]
    pub data: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_classifies_failures() {
        let e = ClientFrame::decode("{not json").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Malformed);
        let e = ClientFrame::decode(r#"{"type":"launch_rockets","reqId":4}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::UnknownMessage);
        assert_eq!(e.req_id, Some(4));
        let e = ClientFrame::decode(r#"{"type":"register_publisher","reqId":5}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Malformed);
        assert_eq!(e.req_id, Some(5));
        let too_many = ClientFrame::push_acks_json(&vec![1; MAX_PUSH_ACKS + 1]);
        let e = ClientFrame::decode(&too_many).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Malformed);
    }

    #[test]
    fn the_version_spoken_is_the_highest_both_sides_speak() {
        assert_eq!(negotiate(0), None);
        assert_eq!(negotiate(1), Some(1));
        assert_eq!(negotiate(2), Some(2));
        assert_eq!(negotiate(PROTOCOL_VERSION + 5), Some(PROTOCOL_VERSION));
    }

    #[test]
    fn round_trip() {
        let f = ClientFrame::RegisterPublisher {
            req_id: 1,
            regist_id: "p1".into(),
            data_id: "svc".into(),
            instance_id: None,
            group: None,
            data: vec!["10.0.0.1:8080".into()],
            version: 1,
        };
        let text = serde_json::to_string(&f).unwrap();
        assert!(text.contains(r#""type":"register_publisher""#));
        assert!(text.contains(r#""registId":"p1""#));
        assert_eq!(ClientFrame::decode(&text).unwrap(), f);
        let err = ServerFrame::Error {
            req_id: Some(3),
            error: ApiError::new(ErrorCode::InvalidArgument, "dataId is empty"),
        };
        let text = serde_json::to_string(&err).unwrap();
        assert!(text.contains(r#""code":"invalid_argument""#));
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), err);
        assert_eq!(ServerFrame::decode(&text).unwrap(), err);
        let push = Push {
            push_id: 9,
            regist_id: "s1".into(),
            data_info_id: DataInfoId::new("svc", None, None).unwrap(),
            version: 77,
            data: vec!["a".into()],
        };
        assert_eq!(
            ClientFrame::push_ack_json(7),
            serde_json::to_string(&ClientFrame::PushAck { push_id: 7 }).unwrap()
        );
        let single = ServerFrame::Push(push.clone());
        let text = serde_json::to_string(&single).unwrap();
        assert!(text.starts_with(r#"{"type":"push","pushId":9,"#), "{text}");
        assert_eq!(ServerFrame::decode(&text).unwrap(), single);
        let batch = ServerFrame::Pushes {
            pushes: vec![
                push.clone(),
                Push {
                    push_id: 10,
                    ..push
                },
            ],
        };
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(ServerFrame::decode(&text).unwrap(), batch);
        let acks = ClientFrame::PushAcks {
            push_ids: vec![9, 10],
        };
        assert_eq!(
            ClientFrame::push_acks_json(&[9, 10]),
            serde_json::to_string(&acks).unwrap()
        );
        assert_eq!(
            ClientFrame::decode(&ClientFrame::push_acks_json(&[9, 10])).unwrap(),
            acks
        );
        let hello = ClientFrame::Hello {
            req_id: 1,
            protocol: 1,
            client_id: "c".into(),
            zone: String::new(),
            app: String::new(),
            auth: Some(crate::auth::HelloAuth {
                key_id: "k".into(),
                timestamp_ms: 5,
                nonce: "n".into(),
                signature: "00".into(),
            }),
        };
        assert_eq!(
            ClientFrame::decode(&serde_json::to_string(&hello).unwrap()).unwrap(),
            hello
        );
    }
}
