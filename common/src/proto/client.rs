//! SDK <-> SessionServer frames.
//!
//! Every frame is a JSON object with a `type` field (snake_case) and camelCase fields. Client
//! requests carry a `reqId` that the server echoes in its `ack` or `error`. A connection starts
//! with `hello`; the server answers `welcome` with the connection id it assigned.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::id::DataInfoId;

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// Decodes one text frame, classifying failures as malformed JSON, unknown message
    /// type, or a known type with bad fields.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        match serde_json::from_str(text) {
            Ok(frame) => Ok(frame),
            Err(err) => Err(Self::diagnose(text, err)),
        }
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
            ClientFrame::PushAck { .. } => None,
        }
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
    /// The full datum of one dataInfoId for one subscription. Acknowledge with `push_ack`.
    Push {
        push_id: u64,
        /// The subscription (`registId` of `register_subscriber`) this push is for.
        regist_id: String,
        data_info_id: DataInfoId,
        version: u64,
        /// Every publisher's data strings.
        data: Vec<String>,
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
    }
}
