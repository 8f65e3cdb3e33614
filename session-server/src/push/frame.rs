//! A datum as it is pushed: its `push` frame's payload serialised once for every subscriber,
//! each push then only wrapping its `pushId` and `registId` around it. A push waits in its
//! connection's outbox as a [`QueuedPush`] (the shared datum and the two ids), and its text
//! is joined only as the writer sends it: the subscribers of one datum never each hold a copy
//! of its data while they wait.

use std::sync::Arc;

use registry_common::model::PushDatum;

/// A datum with its push payload serialised once for every subscriber.
#[derive(Debug)]
pub struct Prepared {
    /// Version, publisher count and flags of the datum (its data lives in `data_json`).
    pub datum: PushDatum,
    /// JSON of the dataInfoId string.
    id_json: String,
    /// JSON array of every publisher's data strings.
    data_json: String,
}

impl Prepared {
    pub fn new(mut datum: PushDatum) -> Self {
        let id_json = serde_json::to_string(datum.data_info_id.as_str()).unwrap_or_default();
        let data_json = serde_json::to_string(&datum.data).unwrap_or_else(|_| "[]".into());
        // Only the serialised form is pushed; the strings themselves need not stay cached.
        datum.data = Vec::new();
        Self {
            datum,
            id_json,
            data_json,
        }
    }

    pub fn version(&self) -> u64 {
        self.datum.version
    }

    fn frame(&self, push_id: u64, regist_id: &str) -> String {
        // Appended piece by piece: the data is most of the frame and is copied once.
        let regist = serde_json::to_string(regist_id).unwrap_or_default();
        let push_id = push_id.to_string();
        let version = self.datum.version.to_string();
        let parts: [&str; 10] = [
            r#"{"type":"push","pushId":"#,
            &push_id,
            r#","registId":"#,
            &regist,
            r#","dataInfoId":"#,
            &self.id_json,
            r#","version":"#,
            &version,
            r#","data":"#,
            &self.data_json,
        ];
        let mut frame = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
        parts.iter().for_each(|p| frame.push_str(p));
        frame.push('}');
        frame
    }
}

/// A push waiting in a connection's outbox: what its frame is made of, not the frame.
#[derive(Debug)]
pub struct QueuedPush {
    /// The datum, shared with the cache and every other subscription it is pushed to.
    pub(super) prepared: Arc<Prepared>,
    pub(super) push_id: u64,
    pub(super) regist_id: Arc<str>,
}

impl QueuedPush {
    /// The frame's text, built as it is written.
    pub fn text(&self) -> String {
        self.prepared.frame(self.push_id, &self.regist_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_common::id::DataInfoId;

    #[test]
    fn a_queued_push_writes_the_frame_a_client_parses() {
        let id = DataInfoId::parse("svc.frame#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP").unwrap();
        let mut datum = PushDatum::empty(id.clone(), 42);
        datum.publishers = 2;
        datum.data = vec!["a:1".into(), "b\"2".into()];
        let queued = QueuedPush {
            prepared: Arc::new(Prepared::new(datum)),
            push_id: 7,
            regist_id: Arc::from("sub-\"1"),
        };
        let frame: serde_json::Value = serde_json::from_str(&queued.text()).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "push", "pushId": 7, "registId": "sub-\"1",
                "dataInfoId": id.as_str(), "version": 42, "data": ["a:1", "b\"2"]})
        );
    }
}
