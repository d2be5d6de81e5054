//! Filter expressions, in the style of sysdig and tcpdump.
//!
//! ```text
//! expr      := or
//! or        := and (("or" | "||") and)*
//! and       := unary (("and" | "&&") unary)*
//! unary     := ("not" | "!") unary | "(" expr ")" | predicate
//! predicate := FIELD OP VALUE | FIELD "in" "(" VALUE ("," VALUE)* ")" | FIELD VALUE
//! OP        := "=" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "startswith" | "endswith"
//! ```
//!
//! `FIELD VALUE` (no operator) means `FIELD = VALUE`, as in tcpdump's `port 80`. Values are bare
//! words or quoted strings (`"GET /"`, `'a b'`) with the escapes `\n \r \t \\ \" \' \xNN`.
//! Keywords and operator words are case-insensitive.
//!
//! Fields (see [`FIELDS`]): `kind`, `step`, `pid`, `ppid`, `tid`, `comm`, `exe`, `cgroup`,
//! `container`, `port` (either endpoint), `lport`, `rport`, `addr` (either endpoint, alias
//! `host`), `laddr`, `raddr`, `fd`, `direction`, `node`, `payload`, `size`, `errno`. Addresses
//! accept CIDR prefixes (`addr = 10.0.0.0/8`); IPv4-mapped IPv6 addresses match their IPv4 form.
//!
//! Semantics:
//! - A predicate on a field the event does not have is false, whatever the operator
//!   (`pid != 5` is false for a loss marker); write `not pid = 5` to include such events.
//! - Fields with two values (`port`, `addr`: local and remote) match `=`, `in`, `<`... when
//!   either endpoint does, and `!=` when neither equals the value.
//! - Values are checked against the field's type when the expression is parsed: a malformed
//!   expression is a [`FilterError`] naming the column.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use retrace_segment::{Direction, EventKind};

use crate::view::EventView;

/// A malformed filter expression: what is wrong and where (1-based column, in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at column {column}: {message}")]
pub struct FilterError {
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The type of a field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// An event kind name.
    Kind,
    /// Text.
    Text,
    /// An integer.
    Number,
    /// An IP address or CIDR prefix.
    Ip,
    /// `egress` or `ingress`.
    Direction,
    /// Bytes (payloads).
    Bytes,
}

/// A field that filters can test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Event kind (`exec`, `tcp`, `l7`...).
    Kind,
    /// Sub-kind: TCP step, TCP sample kind, loss reason, mark source.
    Step,
    /// Process id.
    Pid,
    /// Parent process id.
    Ppid,
    /// Thread id.
    Tid,
    /// Command name.
    Comm,
    /// Executable path.
    Exe,
    /// cgroup path.
    Cgroup,
    /// Container id.
    Container,
    /// Either port.
    Port,
    /// Local port.
    Lport,
    /// Remote port.
    Rport,
    /// Either address.
    Addr,
    /// Local address.
    Laddr,
    /// Remote address.
    Raddr,
    /// File descriptor.
    Fd,
    /// Data direction.
    Direction,
    /// Node name.
    Node,
    /// Payload prefix.
    Payload,
    /// Real data size.
    Size,
    /// errno of a failed connect.
    Errno,
}

/// Every field: name, field, type, help.
pub const FIELDS: &[(&str, Field, FieldType, &str)] = &[
    ("kind", Field::Kind, FieldType::Kind, "event kind: exec fork exit tcp l7 tcp_sample udp oom alloc alloc_snapshot cpu stack log loss mark node"),
    ("step", Field::Step, FieldType::Text, "tcp step (connect_attempt established failed accepted closed listen_open listen_close), tcp_sample kind, loss reason, mark source"),
    ("pid", Field::Pid, FieldType::Number, "process id"),
    ("ppid", Field::Ppid, FieldType::Number, "parent process id"),
    ("tid", Field::Tid, FieldType::Number, "thread id"),
    ("comm", Field::Comm, FieldType::Text, "command name of the process"),
    ("exe", Field::Exe, FieldType::Text, "executable path of the process"),
    ("cgroup", Field::Cgroup, FieldType::Text, "cgroup path of the process"),
    ("container", Field::Container, FieldType::Text, "container id of the process"),
    ("port", Field::Port, FieldType::Number, "local or remote port"),
    ("lport", Field::Lport, FieldType::Number, "local port"),
    ("rport", Field::Rport, FieldType::Number, "remote port"),
    ("addr", Field::Addr, FieldType::Ip, "local or remote address (CIDR allowed); alias host"),
    ("host", Field::Addr, FieldType::Ip, "alias of addr"),
    ("laddr", Field::Laddr, FieldType::Ip, "local address (CIDR allowed)"),
    ("raddr", Field::Raddr, FieldType::Ip, "remote address (CIDR allowed)"),
    ("fd", Field::Fd, FieldType::Number, "file descriptor"),
    ("direction", Field::Direction, FieldType::Direction, "egress (written) or ingress (read)"),
    ("node", Field::Node, FieldType::Text, "node name"),
    ("payload", Field::Payload, FieldType::Bytes, "captured payload prefix"),
    ("size", Field::Size, FieldType::Number, "real size of the message or write"),
    ("errno", Field::Errno, FieldType::Number, "errno of a failed connect"),
];

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=` or `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `contains`.
    Contains,
    /// `startswith`.
    StartsWith,
    /// `endswith`.
    EndsWith,
    /// `in (a, b, c)`.
    In,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "contains",
            Op::StartsWith => "startswith",
            Op::EndsWith => "endswith",
            Op::In => "in",
        }
    }

    fn from_word(w: &str) -> Option<Op> {
        match w.to_ascii_lowercase().as_str() {
            "contains" => Some(Op::Contains),
            "startswith" => Some(Op::StartsWith),
            "endswith" => Some(Op::EndsWith),
            "in" => Some(Op::In),
            _ => None,
        }
    }

    fn allowed(self, ty: FieldType) -> bool {
        match ty {
            FieldType::Number => matches!(
                self,
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::In
            ),
            FieldType::Text | FieldType::Bytes => matches!(
                self,
                Op::Eq | Op::Ne | Op::Contains | Op::StartsWith | Op::EndsWith | Op::In
            ),
            FieldType::Kind | FieldType::Ip | FieldType::Direction => {
                matches!(self, Op::Eq | Op::Ne | Op::In)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Kind(EventKind),
    Text(String),
    Number(i64),
    Net(IpNet),
    Direction(Direction),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
struct Predicate {
    field: Field,
    op: Op,
    values: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Pred(Predicate),
}

/// A parsed, type-checked filter expression. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    text: String,
    root: Node,
}

impl Filter {
    /// Parses `expr`.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        let tokens = lex(expr)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            end_col: expr.chars().count() + 1,
        };
        if p.tokens.is_empty() {
            return Err(FilterError {
                column: 1,
                message: "empty expression".into(),
            });
        }
        let root = p.or()?;
        if let Some(t) = p.peek() {
            let column = t.col;
            let message = match &t.tok {
                Tok::RParen => "unbalanced ')'".to_string(),
                other => format!(
                    "expected 'and', 'or' or the end, found {}",
                    other.describe()
                ),
            };
            return Err(FilterError { column, message });
        }
        Ok(Filter {
            text: expr.to_string(),
            root,
        })
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the event passes the filter.
    pub fn matches(&self, view: &EventView<'_>) -> bool {
        eval(&self.root, view)
    }

    /// Whether the filter can only match events of the given kinds; `None` when any kind may
    /// match. Lets readers skip work for kinds that cannot pass.
    pub fn kinds(&self) -> Option<Vec<EventKind>> {
        kinds_of(&self.root).map(|set| {
            EventKind::ALL
                .into_iter()
                .filter(|k| set & (1u32 << k.as_u8()) != 0)
                .collect()
        })
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Bit set of kinds the node may match, `None` = all.
fn kinds_of(node: &Node) -> Option<u32> {
    match node {
        Node::And(a, b) => match (kinds_of(a), kinds_of(b)) {
            (Some(x), Some(y)) => Some(x & y),
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        },
        Node::Or(a, b) => Some(kinds_of(a)? | kinds_of(b)?),
        Node::Not(_) => None,
        Node::Pred(p) if p.field == Field::Kind && matches!(p.op, Op::Eq | Op::In) => {
            let mut set = 0u32;
            for v in &p.values {
                if let Value::Kind(k) = v {
                    set |= 1 << k.as_u8();
                }
            }
            Some(set)
        }
        Node::Pred(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Op(Op),
    And,
    Or,
    Not,
    /// A word: (text, quoted).
    Word(String, bool),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Op(op) => format!("'{}'", op.name()),
            Tok::And => "'and'".into(),
            Tok::Or => "'or'".into(),
            Tok::Not => "'not'".into(),
            Tok::Word(w, _) => format!("'{w}'"),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    col: usize,
}

fn lex(expr: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let mut push = |tok, len: usize| {
            out.push(Token { tok, col });
            len
        };
        i += match c {
            c if c.is_whitespace() => 1,
            '(' => push(Tok::LParen, 1),
            ')' => push(Tok::RParen, 1),
            ',' => push(Tok::Comma, 1),
            '=' if next == Some('=') => push(Tok::Op(Op::Eq), 2),
            '=' => push(Tok::Op(Op::Eq), 1),
            '!' if next == Some('=') => push(Tok::Op(Op::Ne), 2),
            '!' => push(Tok::Not, 1),
            '<' if next == Some('=') => push(Tok::Op(Op::Le), 2),
            '<' => push(Tok::Op(Op::Lt), 1),
            '>' if next == Some('=') => push(Tok::Op(Op::Ge), 2),
            '>' => push(Tok::Op(Op::Gt), 1),
            '&' if next == Some('&') => push(Tok::And, 2),
            '|' if next == Some('|') => push(Tok::Or, 2),
            '&' | '|' => {
                return Err(FilterError {
                    column: col,
                    message: format!("unexpected '{c}' (did you mean '{c}{c}'?)"),
                })
            }
            '"' | '\'' => {
                let (text, len) = lex_quoted(&chars[i..], col)?;
                push(Tok::Word(text, true), len)
            }
            _ => {
                let start = i;
                let mut j = i;
                while j < chars.len() && !is_delim(chars[j]) {
                    j += 1;
                }
                let word: String = chars[start..j].iter().collect();
                let tok = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Word(word, false),
                };
                push(tok, j - start)
            }
        };
    }
    Ok(out)
}

fn is_delim(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | ',' | '=' | '!' | '<' | '>' | '"' | '\'' | '&' | '|'
        )
}

/// Lexes a quoted string starting at `chars[0]` (the quote); returns the text and the number of
/// characters consumed.
fn lex_quoted(chars: &[char], col: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[0];
    let mut text = String::new();
    let mut i = 1;
    while i < chars.len() {
        let c = chars[i];
        if c == quote {
            return Ok((text, i + 1));
        }
        if c == '\\' {
            let esc_col = col + i;
            let Some(&e) = chars.get(i + 1) else { break };
            match e {
                'n' => text.push('\n'),
                'r' => text.push('\r'),
                't' => text.push('\t'),
                '0' => text.push('\0'),
                '\\' | '"' | '\'' => text.push(e),
                'x' => {
                    let hex: String = chars.iter().skip(i + 2).take(2).collect();
                    let byte = (hex.len() == 2)
                        .then(|| u8::from_str_radix(&hex, 16).ok())
                        .flatten()
                        .ok_or_else(|| FilterError {
                            column: esc_col,
                            message: "\\x needs two hex digits".into(),
                        })?;
                    // Bytes above 0x7f are kept as the char with that code point; payload
                    // comparisons turn them back into single bytes (see `value_bytes`).
                    text.push(char::from(byte));
                    i += 2;
                }
                other => {
                    return Err(FilterError {
                        column: esc_col,
                        message: format!("unknown escape '\\{other}'"),
                    })
                }
            }
            i += 2;
            continue;
        }
        text.push(c);
        i += 1;
    }
    Err(FilterError {
        column: col,
        message: format!("unterminated string (missing {quote})"),
    })
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_col: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn col(&self) -> usize {
        self.peek().map_or(self.end_col, |t| t.col)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            column: self.col(),
            message: message.into(),
        })
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end".to_string(), |t| t.tok.describe())
    }

    fn or(&mut self) -> Result<Node, FilterError> {
        let mut left = self.and()?;
        while matches!(self.peek().map(|t| &t.tok), Some(Tok::Or)) {
            self.pos += 1;
            let right = self.and()?;
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, FilterError> {
        let mut left = self.unary()?;
        while matches!(self.peek().map(|t| &t.tok), Some(Tok::And)) {
            self.pos += 1;
            let right = self.unary()?;
            left = Node::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, FilterError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Node::Not(Box::new(self.unary()?)))
            }
            Some(Tok::LParen) => {
                let open_col = self.col();
                self.pos += 1;
                let inner = self.or()?;
                match self.peek().map(|t| &t.tok) {
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    None => Err(FilterError {
                        column: open_col,
                        message: "unclosed '('".into(),
                    }),
                    Some(_) => self.err(format!("expected ')', found {}", self.found())),
                }
            }
            Some(Tok::Word(_, false)) => self.predicate(),
            _ => self.err(format!("expected a field name, found {}", self.found())),
        }
    }

    fn predicate(&mut self) -> Result<Node, FilterError> {
        let Some(Token {
            tok: Tok::Word(name, _),
            col: field_col,
        }) = self.next()
        else {
            return self.err("expected a field name");
        };
        let lname = name.to_ascii_lowercase();
        let Some(&(fname, field, ty, _)) = FIELDS.iter().find(|(n, ..)| *n == lname) else {
            let names: Vec<&str> = FIELDS.iter().map(|(n, ..)| *n).collect();
            return Err(FilterError {
                column: field_col,
                message: format!("unknown field '{name}' (fields: {})", names.join(", ")),
            });
        };
        let op_col = self.col();
        let op = match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Op(op)) => {
                self.pos += 1;
                op
            }
            Some(Tok::Word(w, false)) if Op::from_word(&w).is_some() => {
                self.pos += 1;
                Op::from_word(&w).unwrap_or(Op::Eq)
            }
            // tcpdump style: `port 80` means `port = 80`.
            Some(Tok::Word(..)) => Op::Eq,
            _ => {
                return self.err(format!(
                    "expected an operator or a value after '{fname}', found {}",
                    self.found()
                ))
            }
        };
        if !op.allowed(ty) {
            return Err(FilterError {
                column: op_col,
                message: format!("operator '{}' does not apply to field '{fname}'", op.name()),
            });
        }
        let mut values = Vec::new();
        if op == Op::In {
            if !matches!(self.peek().map(|t| &t.tok), Some(Tok::LParen)) {
                return self.err(format!("expected '(' after 'in', found {}", self.found()));
            }
            self.pos += 1;
            loop {
                values.push(self.value(fname, ty, op)?);
                match self.peek().map(|t| &t.tok) {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return self.err(format!(
                            "expected ',' or ')' in the list, found {}",
                            self.found()
                        ));
                    }
                }
            }
        } else {
            values.push(self.value(fname, ty, op)?);
        }
        Ok(Node::Pred(Predicate { field, op, values }))
    }

    fn value(&mut self, fname: &str, ty: FieldType, op: Op) -> Result<Value, FilterError> {
        let col = self.col();
        let text = match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Word(w, _)) => w,
            _ => {
                return self.err(format!(
                    "expected a value after '{fname} {}', found {}",
                    op.name(),
                    self.found()
                ))
            }
        };
        self.pos += 1;
        let bad = |message: String| {
            Err(FilterError {
                column: col,
                message,
            })
        };
        let substring = matches!(op, Op::Contains | Op::StartsWith | Op::EndsWith);
        match ty {
            FieldType::Kind => match kind_from_name(&text) {
                Some(k) => Ok(Value::Kind(k)),
                None => {
                    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                    bad(format!(
                        "unknown kind '{text}' (kinds: {})",
                        names.join(", ")
                    ))
                }
            },
            FieldType::Text if substring || op == Op::Eq || op == Op::Ne || op == Op::In => {
                Ok(Value::Text(text))
            }
            FieldType::Text => bad(format!("'{fname}' is text")),
            FieldType::Bytes => Ok(Value::Bytes(value_bytes(&text))),
            FieldType::Number => match parse_number(&text) {
                Some(n) => Ok(Value::Number(n)),
                None => bad(format!("'{fname}' expects a number, got '{text}'")),
            },
            FieldType::Ip => match parse_net(&text) {
                Some(n) => Ok(Value::Net(n)),
                None => bad(format!(
                    "'{fname}' expects an IP address or a CIDR prefix, got '{text}'"
                )),
            },
            FieldType::Direction => match text.to_ascii_lowercase().as_str() {
                "egress" | "out" | "write" | "tx" => Ok(Value::Direction(Direction::Egress)),
                "ingress" | "in" | "read" | "rx" => Ok(Value::Direction(Direction::Ingress)),
                _ => bad(format!("'{fname}' is egress or ingress, got '{text}'")),
            },
        }
    }
}

/// Accepts the short names (`exec`, `l7`) and the serde names (`proc_exec`, `oom_kill`).
fn kind_from_name(s: &str) -> Option<EventKind> {
    let s = s.to_ascii_lowercase();
    EventKind::from_name(&s).or_else(|| {
        EventKind::ALL.into_iter().find(|k| {
            serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(|n| n == s))
                .unwrap_or(false)
        })
    })
}

fn parse_number(s: &str) -> Option<i64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok();
    }
    s.parse().ok()
}

fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        let net: IpNet = s.parse().ok()?;
        // Normalize IPv4-mapped prefixes (::ffff:10.0.0.0/104) to IPv4.
        if let IpNet::V6(v6) = net {
            if let Some(v4) = v6.addr().to_ipv4_mapped() {
                if v6.prefix_len() >= 96 {
                    return IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok();
                }
            }
        }
        return Some(net.trunc());
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let ip = ip.to_canonical();
    let len = if ip.is_ipv4() { 32 } else { 128 };
    IpNet::new(ip, len).ok()
}

/// A quoted value's characters back to bytes: chars below 256 (from `\xNN` escapes) are single
/// bytes, others are UTF-8.
fn value_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn eval(node: &Node, v: &EventView<'_>) -> bool {
    match node {
        Node::And(a, b) => eval(a, v) && eval(b, v),
        Node::Or(a, b) => eval(a, v) || eval(b, v),
        Node::Not(a) => !eval(a, v),
        Node::Pred(p) => eval_pred(p, v),
    }
}

/// Applies a predicate to the (up to two) values a field has for the event.
fn apply<T>(got: &[T], p: &Predicate, test: impl Fn(&T, Op, &Value) -> bool) -> bool {
    if got.is_empty() {
        return false;
    }
    match p.op {
        Op::Ne => got
            .iter()
            .all(|g| p.values.iter().all(|val| !test(g, Op::Eq, val))),
        Op::In => got
            .iter()
            .any(|g| p.values.iter().any(|val| test(g, Op::Eq, val))),
        op => got
            .iter()
            .any(|g| p.values.iter().any(|val| test(g, op, val))),
    }
}

fn eval_pred(p: &Predicate, v: &EventView<'_>) -> bool {
    match p.field {
        Field::Kind => apply(
            &[v.event.kind()],
            p,
            |k, _, val| matches!(val, Value::Kind(x) if x == k),
        ),
        Field::Direction => apply(
            v.direction().as_slice(),
            p,
            |d, _, val| matches!(val, Value::Direction(x) if x == d),
        ),
        Field::Step => apply(v.step().as_slice(), p, |s, op, val| text_test(s, op, val)),
        Field::Comm => apply(v.comm().as_slice(), p, |s, op, val| text_test(s, op, val)),
        Field::Exe => apply(v.exe().as_slice(), p, |s, op, val| text_test(s, op, val)),
        Field::Cgroup => apply(v.cgroup().as_slice(), p, |s, op, val| text_test(s, op, val)),
        Field::Container => apply(v.container().as_slice(), p, |s, op, val| {
            text_test(s, op, val)
        }),
        Field::Node => apply(&[v.node], p, |s, op, val| text_test(s, op, val)),
        Field::Payload => apply(v.payload().as_slice(), p, |b, op, val| match val {
            Value::Bytes(needle) => bytes_test(b, op, needle),
            _ => false,
        }),
        Field::Pid => num(p, v.pid().map(i64::from)),
        Field::Ppid => num(p, v.ppid().map(i64::from)),
        Field::Tid => num(p, v.tid().map(i64::from)),
        Field::Fd => num(p, v.fd().map(i64::from)),
        Field::Errno => num(p, v.errno().map(i64::from)),
        Field::Size => num(p, v.size().and_then(|s| i64::try_from(s).ok())),
        Field::Lport => num(p, v.local().map(|e| i64::from(e.port))),
        Field::Rport => num(p, v.remote().map(|e| i64::from(e.port))),
        Field::Port => {
            let ports: Vec<i64> = [v.local(), v.remote()]
                .into_iter()
                .flatten()
                .map(|e| i64::from(e.port))
                .collect();
            apply(&ports, p, num_test)
        }
        Field::Laddr => apply(v.local().map(|e| e.addr.ip()).as_slice(), p, ip_test),
        Field::Raddr => apply(v.remote().map(|e| e.addr.ip()).as_slice(), p, ip_test),
        Field::Addr => {
            let ips: Vec<IpAddr> = [v.local(), v.remote()]
                .into_iter()
                .flatten()
                .map(|e| e.addr.ip())
                .collect();
            apply(&ips, p, ip_test)
        }
    }
}

fn num(p: &Predicate, n: Option<i64>) -> bool {
    apply(n.as_slice(), p, num_test)
}

fn num_test(g: &i64, op: Op, val: &Value) -> bool {
    let Value::Number(x) = val else { return false };
    match op {
        Op::Eq => g == x,
        Op::Lt => g < x,
        Op::Le => g <= x,
        Op::Gt => g > x,
        Op::Ge => g >= x,
        _ => false,
    }
}

fn ip_test(g: &IpAddr, _op: Op, val: &Value) -> bool {
    matches!(val, Value::Net(net) if net.contains(&g.to_canonical()))
}

fn text_test(g: &str, op: Op, val: &Value) -> bool {
    let Value::Text(x) = val else { return false };
    match op {
        Op::Eq => g == x,
        Op::Contains => g.contains(x.as_str()),
        Op::StartsWith => g.starts_with(x.as_str()),
        Op::EndsWith => g.ends_with(x.as_str()),
        _ => false,
    }
}

fn bytes_test(g: &[u8], op: Op, needle: &[u8]) -> bool {
    match op {
        Op::Eq => g == needle,
        Op::Contains => needle.is_empty() || g.windows(needle.len()).any(|w| w == needle),
        Op::StartsWith => g.starts_with(needle),
        Op::EndsWith => g.ends_with(needle),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retrace_segment::{
        ConnId, Endpoint, Event, EventBody, L7Message, LossMarker, LossReason, ProcessInfo,
        TcpEvent, TcpStep,
    };
    use std::net::Ipv4Addr;

    fn l7(pid: u32, lport: u16, rport: u16, payload: &[u8]) -> Event {
        Event::new(
            10,
            EventBody::L7(L7Message {
                conn: ConnId {
                    pid,
                    fd: 7,
                    start_ns: 1,
                },
                tid: pid + 1,
                direction: Direction::Egress,
                size: 1000,
                payload: payload.to_vec(),
                tcp_seq: None,
                folded_calls: 0,
                folded_bytes: 0,
                local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), lport),
                remote: Endpoint::new(Ipv4Addr::new(192, 168, 1, 20), rport),
            }),
        )
    }

    fn tcp(pid: u32, step: TcpStep) -> Event {
        Event::new(
            10,
            EventBody::Tcp(TcpEvent {
                conn: ConnId {
                    pid,
                    fd: 3,
                    start_ns: 1,
                },
                tid: pid,
                local: Endpoint::new(Ipv4Addr::new(127, 0, 0, 1), 40000),
                remote: Endpoint::new(Ipv4Addr::new(127, 0, 0, 1), 5432),
                step,
            }),
        )
    }

    fn loss() -> Event {
        Event::new(
            10,
            EventBody::Loss(LossMarker {
                kind: EventKind::L7,
                cpu: 0,
                count: 5,
                reason: LossReason::RingFull,
                from_ns: 0,
                to_ns: 10,
            }),
        )
    }

    fn proc_info(comm: &str) -> ProcessInfo {
        ProcessInfo {
            pid: 42,
            comm: comm.into(),
            exe: format!("/usr/sbin/{comm}"),
            cgroup: "/system.slice/nginx.service".into(),
            ..Default::default()
        }
    }

    fn check(expr: &str, ev: &Event, proc: Option<&ProcessInfo>) -> bool {
        let f = Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let view = EventView {
            event: ev,
            node: "node-a",
            process: proc,
            endpoints: crate::view::event_endpoints(ev),
        };
        f.matches(&view)
    }

    #[test]
    fn simple_comparisons() {
        let ev = l7(42, 8080, 51000, b"GET /users/1 HTTP/1.1\r\n");
        let p = proc_info("nginx");
        assert!(check("kind = l7", &ev, Some(&p)));
        assert!(check("kind == l7", &ev, Some(&p)));
        assert!(!check("kind = tcp", &ev, Some(&p)));
        assert!(check("kind != tcp", &ev, Some(&p)));
        assert!(check("pid = 42 and tid = 43", &ev, Some(&p)));
        assert!(check(
            "pid > 41 and pid < 43 and pid >= 42 and pid <= 42",
            &ev,
            Some(&p)
        ));
        assert!(!check("pid > 42", &ev, Some(&p)));
        assert!(check("comm = nginx", &ev, Some(&p)));
        assert!(check("comm=nginx", &ev, Some(&p)));
        assert!(check(
            "exe endswith nginx and exe startswith /usr",
            &ev,
            Some(&p)
        ));
        assert!(check("cgroup contains nginx.service", &ev, Some(&p)));
        assert!(check("node = node-a", &ev, Some(&p)));
        assert!(check(
            "fd = 7 and direction = egress and size = 1000",
            &ev,
            Some(&p)
        ));
        assert!(!check("direction = ingress", &ev, Some(&p)));
        assert!(check("payload contains \"GET /users\"", &ev, Some(&p)));
        assert!(check(
            "payload startswith 'GET ' and payload contains \"\\r\\n\"",
            &ev,
            Some(&p)
        ));
        assert!(!check("payload contains POST", &ev, Some(&p)));
        assert!(check("payload contains \"\\x48\\x54TP\"", &ev, Some(&p)));
    }

    #[test]
    fn ports_and_addresses_match_either_endpoint() {
        let ev = l7(42, 8080, 51000, b"x");
        assert!(check("port = 8080", &ev, None));
        assert!(check("port = 51000", &ev, None));
        assert!(check("port 8080", &ev, None));
        assert!(!check("port = 80", &ev, None));
        assert!(check("port != 80", &ev, None));
        assert!(
            !check("port != 8080", &ev, None),
            "!= means neither endpoint"
        );
        assert!(check("lport = 8080 and rport = 51000", &ev, None));
        assert!(!check("lport = 51000", &ev, None));
        assert!(check("port in (1, 2, 8080)", &ev, None));
        assert!(!check("port in (1, 2)", &ev, None));
        assert!(check("addr = 10.0.0.1", &ev, None));
        assert!(check("addr = 192.168.0.0/16", &ev, None));
        assert!(check("host 10.0.0.0/8", &ev, None));
        assert!(check(
            "laddr = 10.0.0.0/24 and raddr = 192.168.1.20",
            &ev,
            None
        ));
        assert!(!check("raddr = 10.0.0.0/8", &ev, None));
        assert!(
            check("addr = ::ffff:10.0.0.1", &ev, None),
            "mapped form matches IPv4"
        );
        assert!(check("addr in (1.2.3.4, 192.168.1.0/24)", &ev, None));
        assert!(!check("addr = 2001:db8::/32", &ev, None));
    }

    #[test]
    fn boolean_structure_and_precedence() {
        let ev = tcp(7, TcpStep::Established { latency_ns: 5 });
        assert!(check("kind = l7 or kind = tcp and port = 5432", &ev, None));
        // and binds tighter than or: `false or (true and false)`.
        assert!(!check("kind = l7 or kind = tcp and port = 1", &ev, None));
        assert!(check(
            "(kind = l7 or kind = tcp) and not port = 1",
            &ev,
            None
        ));
        assert!(!check(
            "(kind = l7 or kind = tcp) and !(port = 5432)",
            &ev,
            None
        ));
        assert!(check(
            "kind = tcp && (step = established || step = failed)",
            &ev,
            None
        ));
        assert!(check("not not kind = tcp", &ev, None));
        assert!(check(
            "KIND = tcp AND step in (accepted, established)",
            &ev,
            None
        ));
    }

    #[test]
    fn missing_fields_are_false_even_for_ne() {
        let ev = loss();
        assert!(!check("pid = 5", &ev, None));
        assert!(!check("pid != 5", &ev, None));
        assert!(check("not pid = 5", &ev, None));
        assert!(!check("comm = nginx", &ev, None));
        assert!(!check("port != 80", &ev, None));
        assert!(check("kind = loss and step = ring_full", &ev, None));
    }

    #[test]
    fn errno_and_kind_aliases() {
        let ev = tcp(
            7,
            TcpStep::Failed {
                errno: 111,
                latency_ns: 1,
            },
        );
        assert!(check("errno = 111 and step = failed", &ev, None));
        let ev = l7(1, 1, 2, b"");
        assert!(check("kind in (tcp, l7)", &ev, None));
        let f = Filter::parse("kind = oom_kill").expect("serde name accepted");
        assert_eq!(f.kinds(), Some(vec![EventKind::OomKill]));
    }

    #[test]
    fn kinds_hint() {
        let f = Filter::parse("kind = l7 and port = 80").expect("ok");
        assert_eq!(f.kinds(), Some(vec![EventKind::L7]));
        let f = Filter::parse("kind = l7 or kind in (tcp, exec)").expect("ok");
        assert_eq!(
            f.kinds(),
            Some(vec![EventKind::ProcExec, EventKind::Tcp, EventKind::L7])
        );
        assert_eq!(
            Filter::parse("kind = l7 or port = 80").expect("ok").kinds(),
            None
        );
        assert_eq!(Filter::parse("not kind = l7").expect("ok").kinds(), None);
    }

    fn err(expr: &str) -> FilterError {
        match Filter::parse(expr) {
            Ok(_) => panic!("{expr} should not parse"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = err("kind = l7 and prot = 80");
        assert_eq!(e.column, 15);
        assert!(e.message.contains("unknown field 'prot'"), "{e}");
        let e = err("pid = abc");
        assert_eq!(e.column, 7);
        assert!(e.message.contains("expects a number"), "{e}");
        let e = err("kind = l8");
        assert_eq!(e.column, 8);
        assert!(e.message.contains("unknown kind"), "{e}");
        let e = err("(kind = l7");
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unclosed"), "{e}");
        let e = err("kind = l7)");
        assert_eq!(e.column, 10);
        let e = err("pid =");
        assert_eq!(e.column, 6);
        assert!(e.message.contains("expected a value"), "{e}");
        let e = err("pid = 1 and");
        assert_eq!(e.column, 12);
        let e = err("comm < x");
        assert_eq!(e.column, 6);
        assert!(e.message.contains("does not apply"), "{e}");
        let e = err("payload contains \"abc");
        assert_eq!(e.column, 18);
        assert!(e.message.contains("unterminated"), "{e}");
        let e = err("addr = 10.0.0.300");
        assert_eq!(e.column, 8);
        let e = err("port in (1, 2");
        assert_eq!(e.column, 14);
        let e = err("pid = 1 pid = 2");
        assert_eq!(e.column, 9);
        let e = err("pid = 1 & pid = 2");
        assert_eq!(e.column, 9);
        assert_eq!(err("").column, 1);
        assert_eq!(
            err("kind = l7 and prot = 80").to_string(),
            "invalid filter at column 15: unknown field 'prot' (fields: kind, step, pid, ppid, tid, comm, exe, cgroup, container, port, lport, rport, addr, host, laddr, raddr, fd, direction, node, payload, size, errno)"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = err("comm = \"é\" and x = 1");
        assert_eq!(e.column, 16);
    }

    #[test]
    fn random_input_never_panics() {
        // A tiny deterministic fuzz over the token alphabet.
        let alphabet = [
            "kind", "=", "l7", "(", ")", "and", "or", "not", "\"", "in", ",", "port", "80", "!",
            "<", "'x", "\\", "payload", "contains", " ",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
                s.push(' ');
            }
            let _ = Filter::parse(&s);
        }
    }
}
