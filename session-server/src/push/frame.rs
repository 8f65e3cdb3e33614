//! A datum as it is pushed: its `push` frame's payload serialised once for every subscriber,
//! each push then only wrapping its `pushId` and `registId` around it.

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

    pub(super) fn frame(&self, push_id: u64, regist_id: &str) -> String {
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
