//! The `MeshConfig.Stream` wire format: updates of pre-encoded resources, and their codec.
//!
//! Each model resource is encoded once, when the hub takes it ([`super::hub`]); an update
//! to a proxy is those shared bytes, framed as a `ConfigUpdate` (field 4, `Resource`, is
//! length-delimited: a message is on the wire exactly its encoding). So 1,000 ztunnels
//! receiving 100,000 workloads cost 1,000 memory copies, not 100 million protobuf
//! clones and encodings. Proxies decode the ordinary generated `ConfigUpdate`.
//!
//! A large update goes to proxies that accept it ([`split`], `Subscribe.accepts_parts`) in
//! parts of about [`PART_BYTES`], and each message is encoded into a buffer of exactly
//! its size: a gRPC stream's buffers (sender's and receiver's) keep the capacity of the
//! largest message they carried, which for a whole 100,000-pod model in one message is
//! tens of MB per stream, kept for the stream's life.

use bytes::{Buf, BufMut, Bytes};
use meshwork_model::pb::config::ProxyMessage;
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

/// A `ConfigUpdate` whose resources are already encoded (`Resource` messages).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EncodedUpdate {
    pub nonce: String,
    pub version: u64,
    pub initial: bool,
    pub resources: Vec<Bytes>,
    pub removed: Vec<String>,
    /// More parts of this update follow.
    pub more: bool,
}

/// The size a part of a large update aims at.
pub const PART_BYTES: usize = 1 << 20;

/// `update` in parts of about `limit` bytes of resources (at least one resource each); the
/// removals ride in the last part. One part when it is small enough.
pub fn split(update: EncodedUpdate, limit: usize) -> Vec<EncodedUpdate> {
    let total: usize = update.resources.iter().map(Bytes::len).sum();
    if total <= limit {
        return vec![update];
    }
    let EncodedUpdate {
        nonce,
        version,
        initial,
        resources,
        removed,
        ..
    } = update;
    let part = |resources: Vec<Bytes>| EncodedUpdate {
        nonce: nonce.clone(),
        version,
        initial,
        resources,
        removed: Vec::new(),
        more: true,
    };
    let mut parts = Vec::new();
    let (mut current, mut size) = (Vec::new(), 0);
    for r in resources {
        if size > 0 && size + r.len() > limit {
            parts.push(part(std::mem::take(&mut current)));
            size = 0;
        }
        size += r.len();
        current.push(r);
    }
    parts.push(part(current));
    if let Some(last) = parts.last_mut() {
        last.removed = removed;
        last.more = false;
    }
    parts
}

impl prost::Message for EncodedUpdate {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.nonce.is_empty() {
            encoding::string::encode(1, &self.nonce, buf);
        }
        if self.version != 0 {
            encoding::uint64::encode(2, &self.version, buf);
        }
        if self.initial {
            encoding::bool::encode(3, &self.initial, buf);
        }
        for r in &self.resources {
            encoding::encode_key(4, WireType::LengthDelimited, buf);
            encoding::encode_varint(r.len() as u64, buf);
            buf.put_slice(r);
        }
        encoding::string::encode_repeated(5, &self.removed, buf);
        if self.more {
            encoding::bool::encode(6, &self.more, buf);
        }
    }

    /// Only sent, never received: every field is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let mut n = 0;
        if !self.nonce.is_empty() {
            n += encoding::string::encoded_len(1, &self.nonce);
        }
        if self.version != 0 {
            n += encoding::uint64::encoded_len(2, &self.version);
        }
        if self.initial {
            n += encoding::bool::encoded_len(3, &self.initial);
        }
        n += self
            .resources
            .iter()
            .map(|r| encoding::key_len(4) + encoding::encoded_len_varint(r.len() as u64) + r.len())
            .sum::<usize>();
        n += encoding::string::encoded_len_repeated(5, &self.removed);
        if self.more {
            n += encoding::bool::encoded_len(6, &self.more);
        }
        n
    }

    fn clear(&mut self) {
        *self = EncodedUpdate::default();
    }
}

/// Encodes updates into buffers of exactly their size; decodes `ProxyMessage`s.
#[derive(Default)]
pub(super) struct UpdateCodec;

pub(super) struct ExactEncoder;

impl Encoder for ExactEncoder {
    type Item = EncodedUpdate;
    type Error = Status;

    fn encode(&mut self, item: EncodedUpdate, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Codec for UpdateCodec {
    type Encode = EncodedUpdate;
    type Decode = ProxyMessage;
    type Encoder = ExactEncoder;
    type Decoder = ProstDecoder<ProxyMessage>;

    fn encoder(&mut self) -> ExactEncoder {
        ExactEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource, ConfigUpdate, Workload};
    use prost::Message;

    #[test]
    fn an_encoded_update_decodes_as_a_config_update() {
        let r = make_resource(
            "workload/ns/a".into(),
            resource::Kind::Workload(Workload {
                name: "a".into(),
                namespace: "ns".into(),
                addresses: vec!["10.0.0.1".into()],
                ..Default::default()
            }),
        );
        let update = EncodedUpdate {
            nonce: "1-1".into(),
            version: 7,
            initial: true,
            resources: vec![
                Bytes::from(r.encode_to_vec()),
                Bytes::from(r.encode_to_vec()),
            ],
            removed: vec!["workload/ns/b".into()],
            more: true,
        };
        let bytes = update.encode_to_vec();
        assert_eq!(bytes.len(), update.encoded_len());
        let decoded = ConfigUpdate::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            decoded,
            ConfigUpdate {
                nonce: "1-1".into(),
                version: 7,
                initial: true,
                resources: vec![r.clone(), r],
                removed: vec!["workload/ns/b".into()],
                more: true,
            }
        );
        let empty = EncodedUpdate::default();
        assert_eq!(
            ConfigUpdate::decode(empty.encode_to_vec().as_slice()).unwrap(),
            ConfigUpdate::default()
        );
    }

    #[test]
    fn a_large_update_is_split_into_parts_that_add_up_to_it() {
        let res = |n: usize| Bytes::from(vec![b'x'; n]);
        let update = EncodedUpdate {
            nonce: "3-1".into(),
            version: 4,
            initial: true,
            resources: vec![res(600), res(600), res(300), res(2000), res(10)],
            removed: vec!["gone".into()],
            more: false,
        };
        let parts = split(update.clone(), 1000);
        let sizes: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| p.resources.iter().map(Bytes::len).collect())
            .collect();
        assert_eq!(sizes, [vec![600], vec![600, 300], vec![2000], vec![10]]);
        assert!(parts
            .iter()
            .all(|p| p.nonce == "3-1" && p.version == 4 && p.initial));
        let more: Vec<bool> = parts.iter().map(|p| p.more).collect();
        assert_eq!(more, [true, true, true, false]);
        assert!(parts[..3].iter().all(|p| p.removed.is_empty()));
        assert_eq!(parts[3].removed, ["gone"]);
        assert_eq!(split(update.clone(), 1 << 20), [update]);
    }
}
