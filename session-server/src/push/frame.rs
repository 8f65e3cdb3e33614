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
        let mut data_json = serde_json::to_string(&datum.data).unwrap_or_else(|_| "[]".into());
        // The serialiser grows its buffer by doubling; the cache keeps every datum's text for
        // as long as it is current (at 100,000 datums of 1.4 KiB, 50 MiB of spare capacity).
        data_json.shrink_to_fit();
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

    /// The fields of one push (`"pushId":…,"data":[…]`), appended to `out`: the data is
    /// most of a push and is copied once.
    fn write_fields(&self, out: &mut String, push_id: u64, regist_id: &str) {
        let regist = serde_json::to_string(regist_id).unwrap_or_default();
        let push_id = push_id.to_string();
        let version = self.datum.version.to_string();
        let parts: [&str; 9] = [
            r#""pushId":"#,
            &push_id,
            r#","registId":"#,
            &regist,
            r#","dataInfoId":"#,
            &self.id_json,
            r#","version":"#,
            &version,
            r#","data":"#,
        ];
        parts.iter().for_each(|p| out.push_str(p));
        out.push_str(&self.data_json);
    }

    /// Bytes of one push's fields, give or take its ids' digits and escapes.
    fn fields_len(&self, regist_id: &str) -> usize {
        FIELDS_OVERHEAD + regist_id.len() + self.id_json.len() + self.data_json.len()
    }
}

/// Bytes of a push's field names, punctuation and numbers, at most.
const FIELDS_OVERHEAD: usize = 100;

/// A push waiting in a connection's outbox: what its frame is made of, not the frame.
#[derive(Debug)]
pub struct QueuedPush {
    /// The datum, shared with the cache and every other subscription it is pushed to.
    pub(super) prepared: Arc<Prepared>,
    pub(super) push_id: u64,
    pub(super) regist_id: Arc<str>,
}

impl QueuedPush {
    /// The `push` frame's text, built as it is written.
    pub fn text(&self) -> String {
        let mut frame = String::with_capacity(self.approx_bytes() + 16);
        frame.push_str(r#"{"type":"push","#);
        self.prepared
            .write_fields(&mut frame, self.push_id, &self.regist_id);
        frame.push('}');
        frame
    }

    /// About how many bytes this push adds to a frame.
    pub fn approx_bytes(&self) -> usize {
        self.prepared.fields_len(&self.regist_id)
    }

    #[cfg(test)]
    pub(crate) fn for_test(prepared: Arc<Prepared>, push_id: u64, regist_id: &str) -> Self {
        Self {
            prepared,
            push_id,
            regist_id: Arc::from(regist_id),
        }
    }

    /// One `pushes` frame (protocol 2) carrying `pushes` in order.
    pub fn join(pushes: &[QueuedPush]) -> String {
        let len = pushes.iter().map(|p| p.approx_bytes() + 3).sum::<usize>();
        let mut frame = String::with_capacity(len + 32);
        frame.push_str(r#"{"type":"pushes","pushes":["#);
        for (i, push) in pushes.iter().enumerate() {
            frame.push_str(if i == 0 { "{" } else { ",{" });
            push.prepared
                .write_fields(&mut frame, push.push_id, &push.regist_id);
            frame.push('}');
        }
        frame.push_str("]}");
        frame
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
        let fields = serde_json::json!({"pushId": 7, "registId": "sub-\"1",
                "dataInfoId": id.as_str(), "version": 42, "data": ["a:1", "b\"2"]});
        let mut single = fields.clone();
        single["type"] = "push".into();
        assert_eq!(frame, single);
        assert!(queued.text().len() <= queued.approx_bytes() + 16);

        let second = QueuedPush::for_test(queued.prepared.clone(), 8, &queued.regist_id);
        let batch: serde_json::Value =
            serde_json::from_str(&QueuedPush::join(&[queued, second])).unwrap();
        let mut later = fields.clone();
        later["pushId"] = 8.into();
        assert_eq!(
            batch,
            serde_json::json!({"type": "pushes", "pushes": [fields, later]})
        );
    }
}
