//! HTTP/1.1 on the wire, as the test servers and the raw client read and write it: header
//! lines, framed bodies, one received request, and HTTP dates.

use std::io;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

/// One header line, name as received.
pub type Header = (String, String);

pub(super) fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(super) fn header_values<'a>(headers: &'a [Header], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads header lines up to the empty line.
pub(super) async fn read_header_lines<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> io::Result<Vec<Header>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.to_string()))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        if size == 0 {
            read_header_lines(r).await?; // trailers
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        let mut crlf = String::new();
        r.read_line(&mut crlf).await?;
    }
}

/// Reads a message body framed by `Transfer-Encoding: chunked` or `Content-Length`; `None` when
/// neither is present.
pub(super) async fn read_framed_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    headers: &[Header],
) -> io::Result<Option<Vec<u8>>> {
    // The last coding of all `Transfer-Encoding` lines together frames the body.
    if header_values(headers, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return read_chunked(r).await.map(Some);
    }
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, len.to_string()))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        return Ok(Some(body));
    }
    Ok(None)
}

pub(super) fn connection_tokens(headers: &[Header]) -> Vec<String> {
    header_values(headers, "connection")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// One request as a backend received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of a header, one per header line.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// All values of a header joined as one comma-separated list, split into trimmed elements
    /// (RFC 9110 5.3: several lines are equivalent to one comma-joined line).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.header_values(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

/// Reads one request; `None` on a clean close, an idle timeout or anything unparsable.
pub(super) async fn read_request(
    r: &mut BufReader<TcpStream>,
    idle_close: Option<Duration>,
) -> Option<Received> {
    let mut line = String::new();
    let read = match idle_close {
        Some(idle) => tokio::time::timeout(idle, r.read_line(&mut line))
            .await
            .ok()?,
        None => r.read_line(&mut line).await,
    };
    if read.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next()?.to_string();
    let headers = read_header_lines(r).await.ok()?;
    let body = read_framed_body(r, &headers)
        .await
        .ok()?
        .unwrap_or_default();
    Some(Received {
        method,
        target,
        version,
        headers,
        body,
    })
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form of `Date`, `Expires`
/// and `Last-Modified`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since 1970 of an IMF-fixdate; `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Days since 1970-01-01 from a civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}
