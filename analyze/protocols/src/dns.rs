//! DNS messages (simple-dns): the fields a report needs, from a UDP payload or a TCP message.

use serde::Serialize;
use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, QTYPE, RCODE};

use crate::{Outcome, Req, Resp};

/// Answers kept per message.
const MAX_ANSWERS: usize = 16;

/// One answer record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsAnswer {
    /// Owner name, without the trailing dot.
    pub name: String,
    /// Record type (`A`, `AAAA`, `CNAME`, ...).
    pub rtype: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// Record data as text (address, target name, ...); empty for types not rendered.
    pub data: String,
}

/// The parts of a DNS message that analysis uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsMessage {
    /// Message id (pairs a response with its query).
    pub id: u16,
    /// QR bit: a response.
    pub is_response: bool,
    /// TC bit: truncated (retry over TCP).
    pub truncated: bool,
    /// Response code: `NOERROR`, `FORMERR`, `SERVFAIL`, `NXDOMAIN`, `NOTIMP`, `REFUSED`, ...
    pub rcode: String,
    /// Name of the first question, without the trailing dot.
    pub name: String,
    /// Type of the first question (`A`, `AAAA`, ...).
    pub qtype: String,
    /// Answer records (at most 16).
    pub answers: Vec<DnsAnswer>,
}

impl DnsMessage {
    /// A server error: any response code but `NOERROR` and `NXDOMAIN` (which is an answer).
    pub fn is_server_error(&self) -> bool {
        self.is_response && self.rcode != "NOERROR" && self.rcode != "NXDOMAIN"
    }
}

/// Parses one DNS message (a UDP payload, or a TCP message without its length prefix).
/// `None` when the bytes are not a well-formed DNS message.
pub fn parse(bytes: &[u8]) -> Option<DnsMessage> {
    let packet = Packet::parse(bytes).ok()?;
    let (name, qtype) = match packet.questions.first() {
        Some(q) => (trim_dot(q.qname.to_string()), qtype_name(q.qtype)),
        None => (String::new(), String::new()),
    };
    let answers = packet
        .answers
        .iter()
        .take(MAX_ANSWERS)
        .map(|rr| DnsAnswer {
            name: trim_dot(rr.name.to_string()),
            rtype: type_name(u16::from(rr.rdata.type_code())),
            ttl: rr.ttl,
            data: rdata_text(&rr.rdata),
        })
        .collect();
    Some(DnsMessage {
        id: packet.id(),
        is_response: packet.has_flags(PacketFlag::RESPONSE),
        truncated: packet.has_flags(PacketFlag::TRUNCATION),
        rcode: rcode_name(packet.rcode()).to_string(),
        name,
        qtype,
        answers,
    })
}

/// A name as reports show it: without the root's dot, control characters (a label may hold
/// any byte) as spaces, as [`text`] does for every other protocol, and at most 255 bytes.
fn trim_dot(mut s: String) -> String {
    if s.ends_with('.') {
        s.pop();
    }
    if s.chars().any(char::is_control) {
        s = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
    }
    if s.len() > 255 {
        let mut cut = 255;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn rcode_name(r: RCODE) -> &'static str {
    match r {
        RCODE::NoError => "NOERROR",
        RCODE::FormatError => "FORMERR",
        RCODE::ServerFailure => "SERVFAIL",
        RCODE::NameError => "NXDOMAIN",
        RCODE::NotImplemented => "NOTIMP",
        RCODE::Refused => "REFUSED",
        RCODE::YXDOMAIN => "YXDOMAIN",
        RCODE::YXRRSET => "YXRRSET",
        RCODE::NXRRSET => "NXRRSET",
        RCODE::NOTAUTH => "NOTAUTH",
        RCODE::NOTZONE => "NOTZONE",
        RCODE::BADVERS => "BADVERS",
        _ => "RCODE?",
    }
}

fn type_name(code: u16) -> String {
    match code {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        41 => "OPT".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

fn qtype_name(q: QTYPE) -> String {
    type_name(u16::from(q))
}

fn rdata_text(r: &RData<'_>) -> String {
    match r {
        RData::A(a) => std::net::Ipv4Addr::from(a.address).to_string(),
        RData::AAAA(a) => std::net::Ipv6Addr::from(a.address).to_string(),
        RData::CNAME(c) => trim_dot(c.0.to_string()),
        RData::NS(n) => trim_dot(n.0.to_string()),
        RData::PTR(p) => trim_dot(p.0.to_string()),
        RData::MX(m) => trim_dot(m.exchange.to_string()),
        _ => String::new(),
    }
}

/// A DNS query over TCP: length prefix equal to the rest, and a parsable query.
pub(crate) fn looks_like_tcp_query(b: &[u8], size: u64) -> bool {
    let Some(len) = b
        .get(..2)
        .map(|l| u64::from(u16::from_be_bytes([l[0], l[1]])))
    else {
        return false;
    };
    len + 2 == size
        && len >= 17
        && b.len() as u64 == size
        && parse(&b[2..]).is_some_and(|m| !m.is_response)
}

/// A DNS query sent over UDP (the whole payload is the message, one question).
pub(crate) fn looks_like_udp_query(b: &[u8]) -> bool {
    b.len() >= 17
        && b.len() <= 4096
        && b.get(4..6) == Some(&[0, 1])
        && parse(b).is_some_and(|m| !m.is_response && !m.name.is_empty())
}

/// DNS queries: over TCP (each with its 2-byte length) or one UDP payload.
pub(crate) fn parse_tcp_requests(b: &[u8], _size: u64, out: &mut Vec<Req>) -> Outcome {
    let mut pos = 0usize;
    while let Some(l) = b.get(pos..pos + 2) {
        let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        let Some(msg) = b.get(pos + 2..pos + 2 + len).and_then(parse) else {
            break;
        };
        out.push(Req {
            method: msg.qtype.as_str().into(),
            target: msg.name.as_str().into(),
            route: msg.name.into(),
            offset: pos as u64,
            key: Some(u32::from(msg.id)),
            ..Req::default()
        });
        pos += 2 + len;
    }
    if out.is_empty() {
        // DNS over UDP: the payload is the message.
        if let Some(msg) = parse(b).filter(|m| !m.is_response) {
            out.push(Req {
                method: msg.qtype.as_str().into(),
                target: msg.name.as_str().into(),
                route: msg.name.into(),
                key: Some(u32::from(msg.id)),
                ..Req::default()
            });
            return Outcome::Parsed;
        }
        Outcome::Garbage
    } else {
        Outcome::Parsed
    }
}

/// DNS responses: over TCP or one UDP payload.
pub(crate) fn parse_tcp_responses(b: &[u8], _size: u64, out: &mut Vec<Resp>) -> Outcome {
    let mut pos = 0usize;
    while let Some(l) = b.get(pos..pos + 2) {
        let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        let Some(msg) = b.get(pos + 2..pos + 2 + len).and_then(parse) else {
            break;
        };
        out.push(Resp {
            error: msg.is_server_error(),
            status: msg.rcode.into(),
            offset: pos as u64,
            key: Some(u32::from(msg.id)),
            complete: true,
            ..Resp::default()
        });
        pos += 2 + len;
    }
    if out.is_empty() {
        if let Some(msg) = parse(b).filter(|m| m.is_response) {
            out.push(Resp {
                error: msg.is_server_error(),
                status: msg.rcode.into(),
                key: Some(u32::from(msg.id)),
                complete: true,
                ..Resp::default()
            });
            return Outcome::Parsed;
        }
        Outcome::Continuation
    } else {
        Outcome::Parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `users.svc.cluster.l\xf4\0al` (fuzz target `l7_dns`, crash
    /// 8194a72e): the NUL of the label reached the exchange's target, and from there
    /// requests.csv and terminals.
    const QUERY_WITH_NUL: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
        \x05users\x03svc\x07cluster\x05l\xf4\x00al\x00\x00\x01\x00\x01";

    #[test]
    fn fuzz_l7_dns_nul_in_a_label_is_not_a_control_character_in_the_name() {
        let m = parse(QUERY_WITH_NUL).expect("a DNS query");
        assert!(!m.name.chars().any(char::is_control), "{:?}", m.name);
        assert!(m.name.starts_with("users.svc.cluster.l"), "{:?}", m.name);
        // Over TCP, through a session, as the fuzz target found it.
        let mut tcp = (QUERY_WITH_NUL.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(QUERY_WITH_NUL);
        let mut s = crate::Session::new(crate::Role::Client);
        let mut out = s.push(1, true, tcp.len() as u64, &tcp);
        out.extend(s.finish());
        assert_eq!(out.len(), 1);
        assert!(
            !out[0].target.chars().any(char::is_control),
            "{:?}",
            out[0].target
        );
    }
}
