//! The seam between the analyzer and the protocol parsers (retrace-protocols).
//!
//! Everything the analyzer needs from the parsers goes through this module, so that the rest
//! of the crate does not depend on their exact types.

pub use retrace_protocols::Text;

/// A parsed request/response pair (`protocol.name()`, `request_ts`, `response_ts`, `method`,
/// `target`, `route`, `status`, `error`, `trace_id` are what the analyzer reads).
pub type Parsed = retrace_protocols::Exchange;

/// Parser counters for one connection side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages fed.
    pub messages: u64,
    /// Messages whose prefix was shorter than the message.
    pub truncated: u64,
    /// Messages that could not be parsed.
    pub unparsed: u64,
}

/// A DNS message, reduced to what names peers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Dns {
    /// Transaction id.
    pub id: u16,
    /// A response (else a query).
    pub is_response: bool,
    /// Queried name.
    pub name: String,
    /// Query type (`A`, `AAAA`, `SRV`...).
    pub qtype: String,
    /// Response code name (`NOERROR`, `NXDOMAIN`...).
    pub rcode: String,
    /// Addresses in the answers.
    pub addrs: Vec<std::net::IpAddr>,
}

pub use imp::{parse_dns, Side};

mod imp {
    use super::{Counters, Dns, Parsed};
    use retrace_protocols as p;

    /// One side of one connection, fed in time order.
    pub struct Side {
        inner: p::Session,
    }

    impl Side {
        /// A new side; `client` when our process connected.
        pub fn new(client: bool) -> Self {
            Self {
                inner: p::Session::new(if client {
                    p::Role::Client
                } else {
                    p::Role::Server
                }),
            }
        }

        /// Feeds one message (`folded`: bytes of earlier syscalls in the same direction that
        /// the capture folded into this event); completed exchanges are appended to `out`.
        pub fn push(
            &mut self,
            ts: u64,
            egress: bool,
            size: u64,
            payload: &[u8],
            folded: u64,
            out: &mut Vec<Parsed>,
        ) {
            if folded > 0 {
                self.inner.add_bytes(egress, folded);
            }
            self.inner.push_into(ts, egress, size, payload, out);
        }

        /// Ends the side; exchanges still open are appended to `out`.
        pub fn finish(self, out: &mut Vec<Parsed>) {
            out.extend(self.inner.finish());
        }

        /// The detected protocol's name, `None` when unknown.
        pub fn protocol(&self) -> Option<&'static str> {
            match self.inner.protocol() {
                p::Protocol::Unknown => None,
                x => Some(x.name()),
            }
        }

        /// Parser counters.
        pub fn counters(&self) -> Counters {
            let s = self.inner.stats();
            Counters {
                messages: s.pushes,
                truncated: s.truncated,
                unparsed: s.unparsed,
            }
        }
    }

    /// Parses a UDP payload as DNS.
    pub fn parse_dns(bytes: &[u8]) -> Option<Dns> {
        let m = p::dns::parse(bytes)?;
        let addrs = m
            .answers
            .iter()
            .filter(|a| a.rtype == "A" || a.rtype == "AAAA")
            .filter_map(|a| a.data.parse().ok())
            .collect();
        Some(Dns {
            id: m.id,
            is_response: m.is_response,
            name: m.name,
            qtype: m.qtype,
            rcode: m.rcode,
            addrs,
        })
    }
}
