//! A small subset of CEL, enough for Telemetry `accessLogging[].filter.expression` and
//! `tagOverrides[].value`: attributes (`request.headers['x']`, `request.method`,
//! `request.url_path` (no query), `request.path` (with query), `request.host`, `response.code`,
//! `destination.port`, `source.principal`, `connection.mtls`), string/integer/boolean
//! literals, comparisons (`== != < <= > >=`), `!`, `&&`, `||` and parentheses.
//!
//! Evaluation never fails: a missing header is `null` (equal to nothing but `null`), and
//! a comparison between values of different types is `false`.

use http::HeaderMap;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CelError {
    #[error("unexpected character {0:?} at offset {1}")]
    Char(char, usize),
    #[error("unterminated string literal")]
    Unterminated,
    #[error("unsupported attribute {0:?}")]
    Attribute(String),
    #[error("unexpected {0} (expected {1})")]
    Unexpected(String, &'static str),
    #[error("integer literal {0:?} out of range")]
    Int(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Op(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, CelError> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[s..i].iter().collect()));
            continue;
        }
        if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let t: String = b[s..i].iter().collect();
            out.push(Tok::Int(t.parse().map_err(|_| CelError::Int(t.clone()))?));
            continue;
        }
        if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(CelError::Unterminated),
                    Some('\\') if i + 1 < b.len() => {
                        s.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
            continue;
        }
        let two: String = b[i..(i + 2).min(b.len())].iter().collect();
        let op2 = ["==", "!=", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|o| *o == two);
        if let Some(o) = op2 {
            out.push(Tok::Op(o));
            i += 2;
            continue;
        }
        let op1 = ["<", ">", "!", "(", ")", "[", "]", "."]
            .into_iter()
            .find(|o| o.starts_with(c));
        match op1 {
            Some(o) => out.push(Tok::Op(o)),
            None => return Err(CelError::Char(c, i)),
        }
        i += 1;
    }
    Ok(out)
}

/// A request attribute the subset knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Header(String),
    Method,
    /// The path with its query.
    Path,
    /// The path without its query.
    UrlPath,
    Host,
    ResponseCode,
    DestinationPort,
    SourcePrincipal,
    ConnectionMtls,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Int(i64),
    Bool(bool),
    Attr(Attr),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
}

/// A value computed from an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Value {
    /// The value as a metric label.
    pub fn to_label(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// What a request offers to expressions.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub headers: HeaderMap,
    pub method: String,
    /// The request path with its query.
    pub path: String,
    pub host: String,
    pub response_code: u16,
    pub destination_port: u16,
    pub source_principal: String,
    pub mtls: bool,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of expression".into(),
            Some(Tok::Op(o)) => format!("{o:?}"),
            Some(Tok::Ident(i)) => format!("{i:?}"),
            Some(Tok::Str(s)) => format!("string {s:?}"),
            Some(Tok::Int(i)) => format!("integer {i}"),
        }
    }

    fn expect(&mut self, op: &'static str) -> Result<(), CelError> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(CelError::Unexpected(self.describe(), op))
        }
    }

    fn or(&mut self) -> Result<Expr, CelError> {
        let mut l = self.and()?;
        while self.eat("||") {
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, CelError> {
        let mut l = self.cmp()?;
        while self.eat("&&") {
            l = Expr::And(Box::new(l), Box::new(self.cmp()?));
        }
        Ok(l)
    }

    fn cmp(&mut self) -> Result<Expr, CelError> {
        let l = self.unary()?;
        let ops = [
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ];
        for (o, c) in ops {
            if self.eat(o) {
                return Ok(Expr::Cmp(c, Box::new(l), Box::new(self.unary()?)));
            }
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, CelError> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.or()?;
            self.expect(")")?;
            return Ok(e);
        }
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Int(i)) => {
                self.pos += 1;
                Ok(Expr::Int(i))
            }
            Some(Tok::Ident(id)) => {
                self.pos += 1;
                match id.as_str() {
                    "true" => Ok(Expr::Bool(true)),
                    "false" => Ok(Expr::Bool(false)),
                    _ => self.attribute(id),
                }
            }
            _ => Err(CelError::Unexpected(self.describe(), "a value")),
        }
    }

    fn attribute(&mut self, root: String) -> Result<Expr, CelError> {
        self.expect(".")?;
        let field = match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(f)) => f,
            _ => return Err(CelError::Unexpected(self.describe(), "an attribute name")),
        };
        self.pos += 1;
        let name = format!("{root}.{field}");
        let attr = match name.as_str() {
            "request.headers" => {
                self.expect("[")?;
                let h = match self.toks.get(self.pos).cloned() {
                    Some(Tok::Str(h)) => h,
                    _ => return Err(CelError::Unexpected(self.describe(), "a header name")),
                };
                self.pos += 1;
                self.expect("]")?;
                Attr::Header(h.to_ascii_lowercase())
            }
            "request.method" => Attr::Method,
            "request.path" => Attr::Path,
            "request.url_path" => Attr::UrlPath,
            "request.host" => Attr::Host,
            "response.code" => Attr::ResponseCode,
            "destination.port" => Attr::DestinationPort,
            "source.principal" => Attr::SourcePrincipal,
            "connection.mtls" => Attr::ConnectionMtls,
            _ => return Err(CelError::Attribute(name)),
        };
        Ok(Expr::Attr(attr))
    }
}

/// Parses an expression of the supported subset.
pub fn parse(src: &str) -> Result<Expr, CelError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(CelError::Unexpected(p.describe(), "end of expression"));
    }
    Ok(e)
}

impl Expr {
    pub fn eval(&self, cx: &Context) -> Value {
        match self {
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Int(i) => Value::Int(*i),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Attr(a) => match a {
                Attr::Header(h) => cx
                    .headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(|v| Value::Str(v.to_string()))
                    .unwrap_or(Value::Null),
                Attr::Method => Value::Str(cx.method.clone()),
                Attr::Path => Value::Str(cx.path.clone()),
                Attr::UrlPath => Value::Str(
                    cx.path
                        .split_once('?')
                        .map_or(cx.path.as_str(), |(p, _)| p)
                        .to_string(),
                ),
                Attr::Host => Value::Str(cx.host.clone()),
                Attr::ResponseCode => Value::Int(i64::from(cx.response_code)),
                Attr::DestinationPort => Value::Int(i64::from(cx.destination_port)),
                Attr::SourcePrincipal => Value::Str(cx.source_principal.clone()),
                Attr::ConnectionMtls => Value::Bool(cx.mtls),
            },
            Expr::Not(e) => Value::Bool(!e.truthy(cx)),
            Expr::And(l, r) => Value::Bool(l.truthy(cx) && r.truthy(cx)),
            Expr::Or(l, r) => Value::Bool(l.truthy(cx) || r.truthy(cx)),
            Expr::Cmp(op, l, r) => Value::Bool(compare(*op, &l.eval(cx), &r.eval(cx))),
        }
    }

    /// The expression as a condition: only `true` is true.
    pub fn truthy(&self, cx: &Context) -> bool {
        self.eval(cx) == Value::Bool(true)
    }
}

fn compare(op: Cmp, l: &Value, r: &Value) -> bool {
    let ord = match (l, r) {
        (Value::Str(a), Value::Str(b)) => a.cmp(b),
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        // Different types are never equal, and not ordered.
        _ => return op == Cmp::Ne,
    };
    match op {
        Cmp::Eq => ord.is_eq(),
        Cmp::Ne => ord.is_ne(),
        Cmp::Lt => ord.is_lt(),
        Cmp::Le => ord.is_le(),
        Cmp::Gt => ord.is_gt(),
        Cmp::Ge => ord.is_ge(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(code: u16) -> Context {
        let mut headers = HeaderMap::new();
        headers.insert("x-foo", "bar".parse().unwrap());
        Context {
            headers,
            method: "POST".into(),
            path: "/orders?page=2".into(),
            response_code: code,
            destination_port: 80,
            source_principal: "spiffe://cluster.local/ns/a/sa/b".into(),
            mtls: true,
            ..Default::default()
        }
    }

    fn check(src: &str, code: u16) -> bool {
        parse(src).unwrap().truthy(&cx(code))
    }

    #[test]
    fn response_code_comparisons() {
        assert!(check("response.code >= 400", 503));
        assert!(!check("response.code >= 400", 200));
        assert!(check("response.code == 503", 503));
        assert!(!check("response.code == 503", 502));
        assert!(check("response.code != 200", 404));
        assert!(check("response.code < 300", 204));
    }

    #[test]
    fn headers_method_and_mtls() {
        assert!(check("request.headers['x-foo'] == 'bar'", 200));
        assert!(check("request.headers[\"X-Foo\"] == \"bar\"", 200));
        assert!(!check("request.headers['x-missing'] == 'bar'", 200));
        assert!(check("request.headers['x-missing'] != 'bar'", 200));
        assert!(check("request.method == 'POST'", 200));
        assert!(check("connection.mtls", 200));
        assert!(!check("!connection.mtls", 200));
    }

    #[test]
    fn boolean_operators_and_precedence() {
        assert!(check(
            "request.method == 'GET' || response.code >= 500",
            503
        ));
        assert!(!check(
            "request.method == 'GET' && response.code >= 500",
            503
        ));
        // && binds tighter than ||.
        assert!(check("true || false && false", 200));
        assert!(!check("(true || false) && false", 200));
        assert!(check("!(response.code == 200) && connection.mtls", 404));
    }

    #[test]
    fn values_for_tags() {
        let c = cx(201);
        let v = |s: &str| parse(s).unwrap().eval(&c).to_label();
        assert_eq!(v("request.headers['x-foo']"), "bar");
        assert_eq!(v("request.url_path"), "/orders");
        assert_eq!(v("request.path"), "/orders?page=2");
        assert_eq!(v("response.code"), "201");
        assert_eq!(v("'abc'"), "abc");
        assert_eq!(v("destination.port"), "80");
        assert_eq!(v("source.principal"), "spiffe://cluster.local/ns/a/sa/b");
        assert_eq!(v("request.headers['nope']"), "");
    }

    #[test]
    fn mismatched_types_are_false() {
        assert!(!check("response.code == '503'", 503));
        assert!(!check("request.method > 3", 200));
    }

    #[test]
    fn errors_are_precise() {
        assert_eq!(
            parse("request.size > 10"),
            Err(CelError::Attribute("request.size".into()))
        );
        assert_eq!(
            parse("response.code >= 400 &&"),
            Err(CelError::Unexpected("end of expression".into(), "a value"))
        );
        assert_eq!(parse("'abc"), Err(CelError::Unterminated));
        assert!(matches!(
            parse("response.code + 1"),
            Err(CelError::Char('+', _))
        ));
        assert!(parse("(response.code == 1").is_err());
        assert!(parse("response.code == 1)").is_err());
        assert!(parse("has(request.headers.x)").is_err());
        assert!(parse("request.headers['a'].startsWith('b')").is_err());
    }
}
