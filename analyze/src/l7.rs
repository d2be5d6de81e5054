//! The seam between the analyzer and the protocol parsers (retrace-protocols).
//!
//! Everything the analyzer needs from the parsers goes through this module, so that the rest
//! of the crate does not depend on their exact types.

/// A parsed request/response pair, as the analyzer keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// Protocol name (`http`, `postgres`, ...).
    pub protocol: &'static str,
    /// First byte of the request (wall ns).
    pub request_ts: u64,
    /// First byte of the response (wall ns), when seen.
    pub response_ts: Option<u64>,
    /// Method.
    pub method: String,
    /// Target.
    pub target: String,
    /// Route template.
    pub route: String,
    /// Status.
    pub status: String,
    /// Failed.
    pub error: bool,
    /// W3C trace id.
    pub trace_id: Option<String>,
}

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
    /// Response code name (`NOERROR`, `NXDOMAIN`...).
    pub rcode: String,
    /// Addresses in the answers.
    pub addrs: Vec<std::net::IpAddr>,
}

pub use standin::{parse_dns, Side};

/// Stand-in used until retrace-protocols provides `Session`: recognises nothing, so every
/// connection is plain `tcp` and every message counts as unknown.
mod standin {
    use super::{Counters, Dns, Parsed};

    /// One side of one connection, fed in time order.
    pub struct Side {
        counters: Counters,
    }

    impl Side {
        /// A new side; `client` when our process connected.
        pub fn new(_client: bool) -> Self {
            Self {
                counters: Counters::default(),
            }
        }

        /// Feeds one message; completed exchanges are appended to `out`.
        pub fn push(
            &mut self,
            _ts: u64,
            _egress: bool,
            size: u64,
            payload: &[u8],
            _out: &mut Vec<Parsed>,
        ) {
            self.counters.messages += 1;
            if (payload.len() as u64) < size {
                self.counters.truncated += 1;
            }
        }

        /// Ends the side; exchanges still open are appended to `out`.
        pub fn finish(self, _out: &mut Vec<Parsed>) {}

        /// The detected protocol's name, `None` when unknown.
        pub fn protocol(&self) -> Option<&'static str> {
            None
        }

        /// Parser counters.
        pub fn counters(&self) -> Counters {
            self.counters
        }
    }

    /// Parses a UDP payload as DNS.
    pub fn parse_dns(_bytes: &[u8]) -> Option<Dns> {
        None
    }
}
