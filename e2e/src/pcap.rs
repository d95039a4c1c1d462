//! Reads classic pcap files (as written by `tcpdump -w`) into TCP segment summaries, so
//! tests can assert what crossed a link without tshark.
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    #[error("pcap: file shorter than its 24-byte header")]
    Short,
    #[error("pcap: bad magic {0:#x}")]
    Magic(u32),
    #[error("pcap: link type {0} (want 1, Ethernet)")]
    LinkType(u32),
}

/// One IPv4 TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Packets of a capture: TCP segments, and how many other frames there were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    pub tcp: Vec<Segment>,
    pub other: usize,
}

impl Capture {
    /// Whether `needle` occurs in any TCP payload.
    pub fn payload_contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty()
            && self
                .tcp
                .iter()
                .any(|s| s.payload.windows(needle.len()).any(|w| w == needle))
    }

    /// Segments whose source and destination ports are both outside `ports`.
    pub fn tcp_not_on_ports(&self, ports: &[u16]) -> Vec<&Segment> {
        self.tcp
            .iter()
            .filter(|s| !ports.contains(&s.sport) && !ports.contains(&s.dport))
            .collect()
    }
}

fn u16be(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

/// Parses a pcap file; a truncated last record is ignored (tcpdump killed mid-write).
pub fn parse(data: &[u8]) -> Result<Capture, PcapError> {
    if data.len() < 24 {
        return Err(PcapError::Short);
    }
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        m => return Err(PcapError::Magic(m)),
    };
    let rd32 = |o: usize| {
        let b = [data[o], data[o + 1], data[o + 2], data[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link = rd32(20);
    if link != 1 {
        return Err(PcapError::LinkType(link));
    }
    let mut cap = Capture::default();
    let mut off = 24;
    // Bounded by the file length: every iteration advances by at least 16 bytes.
    while off + 16 <= data.len() {
        let incl = rd32(off + 8) as usize;
        let start = off + 16;
        let end = start + incl;
        if end > data.len() {
            break;
        }
        match segment(&data[start..end]) {
            Some(s) => cap.tcp.push(s),
            None => cap.other += 1,
        }
        off = end;
    }
    Ok(cap)
}

/// UDP ports whose payload is VXLAN (IANA's 4789, and 8472: Linux's and Cilium's default).
pub const VXLAN_PORTS: [u16; 2] = [4789, 8472];

fn segment(frame: &[u8]) -> Option<Segment> {
    if u16be(frame, 12)? != 0x0800 {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = ((ip.first()? & 0x0f) as usize) * 4;
    if *ip.get(9)? == 17 && ihl >= 20 {
        // VXLAN: the inner Ethernet frame after UDP (8) and VXLAN (8) headers.
        let udp = ip.get(ihl..)?;
        if VXLAN_PORTS.contains(&u16be(udp, 2)?) {
            return segment(udp.get(16..)?);
        }
        return None;
    }
    if *ip.get(9)? != 6 || ihl < 20 {
        return None;
    }
    let total = u16be(ip, 2)? as usize;
    let src = Ipv4Addr::new(*ip.get(12)?, ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(*ip.get(16)?, ip[17], ip[18], ip[19]);
    let tcp = ip.get(ihl..)?;
    let doff = ((tcp.get(12)? >> 4) as usize) * 4;
    let payload_end = total.saturating_sub(ihl).min(tcp.len());
    let payload = tcp.get(doff..payload_end).unwrap_or(&[]).to_vec();
    Some(Segment {
        src,
        dst,
        sport: u16be(tcp, 0)?,
        dport: u16be(tcp, 2)?,
        flags: *tcp.get(13)?,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18;
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        f
    }

    fn file(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        d.extend_from_slice(&[2, 0, 4, 0]);
        d.extend_from_slice(&[0; 8]);
        d.extend_from_slice(&65535u32.to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        for f in frames {
            d.extend_from_slice(&[0; 8]);
            d.extend_from_slice(&(f.len() as u32).to_le_bytes());
            d.extend_from_slice(&(f.len() as u32).to_le_bytes());
            d.extend_from_slice(f);
        }
        d
    }

    #[test]
    fn reads_tcp_inside_vxlan() {
        let inner = frame(40000, 15008, b"hbone");
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + 8 + inner.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 250, 0, 1, 10, 250, 0, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&51000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&8472u16.to_be_bytes());
        f.extend_from_slice(&udp);
        f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 2, 0]);
        f.extend_from_slice(&inner);
        let cap = parse(&file(&[f])).unwrap();
        assert_eq!(cap.tcp.len(), 1);
        assert_eq!(cap.tcp[0].dport, 15008);
        assert_eq!(cap.tcp[0].src, Ipv4Addr::new(10, 0, 0, 1));
        assert!(cap.payload_contains(b"hbone"));
    }

    #[test]
    fn parses_segments_and_finds_payload() {
        let d = file(&[
            frame(40000, 15008, b"\x16\x03\x01tls"),
            frame(40001, 8080, b"GET /secret"),
        ]);
        let c = parse(&d).unwrap();
        assert_eq!(c.tcp.len(), 2);
        assert_eq!(c.tcp[0].dport, 15008);
        assert_eq!(c.tcp[0].src, Ipv4Addr::new(10, 0, 0, 1));
        assert!(c.payload_contains(b"/secret"));
        assert!(!c.payload_contains(b"/other"));
        let off = c.tcp_not_on_ports(&[15008]);
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].dport, 8080);
    }

    #[test]
    fn truncated_record_is_ignored_and_bad_files_rejected() {
        let mut d = file(&[frame(1, 2, b"x")]);
        d.extend_from_slice(&[0; 10]);
        assert_eq!(parse(&d).unwrap().tcp.len(), 1);
        assert_eq!(parse(&[0; 3]), Err(PcapError::Short));
        assert_eq!(parse(&[0; 24]), Err(PcapError::Magic(0)));
    }
}
