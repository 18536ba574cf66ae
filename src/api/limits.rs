//! Limits that keep one client from taking the service: request head size, body time-out,
//! connections per client IP and a request rate per API key (token bucket).
//!
//! Never keys a limit by anything but the API key's id or the client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use futures::StreamExt;
use uuid::Uuid;

use super::AppState;
use crate::app::error::ApiError;

/// Token buckets, one per API key id (so the map holds at most one entry per key that exists).
pub struct KeyRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl KeyRates {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key`, or says how long until one is there.
    pub fn take(&self, key: Uuid) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// Open connections per client IP address.
#[derive(Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection, counted until the connection (and so this value) is dropped.
pub struct ConnectionSlot {
    ip: IpAddr,
    /// Beyond the cap: every request on this connection is refused and the connection closed.
    pub over_cap: bool,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Connections {
    pub fn open(&self, ip: IpAddr, cap: usize) -> ConnectionSlot {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        *n += 1;
        ConnectionSlot {
            ip,
            over_cap: cap > 0 && *n > cap,
            open: self.open.clone(),
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Counts a new connection (`HttpServer::on_connect`).
pub fn on_connect(
    connections: &Connections,
    cap: usize,
    conn: &dyn std::any::Any,
    ext: &mut actix_web::dev::Extensions,
) {
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(peer) = stream.peer_addr()
    {
        ext.insert(connections.open(peer.ip(), cap));
    }
}

/// The middleware: refuses connections beyond the cap and oversized heads, and puts a deadline
/// on reading the body.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limits = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.limits.clone())
        .unwrap_or_default();
    if req
        .conn_data::<ConnectionSlot>()
        .is_some_and(|slot| slot.over_cap)
    {
        let mut reply = ApiError::client(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "at most {} open connections per client address; close some and retry",
                limits.max_connections_per_ip
            ),
        )
        .error_response();
        reply
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        reply
            .headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, 1.into());
        return Ok(req.into_response(reply).map_into_right_body());
    }
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > limits.max_head_bytes {
        let reply = ApiError::client(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request line and headers exceed {} bytes",
                limits.max_head_bytes
            ),
        )
        .error_response();
        return Ok(req.into_response(reply).map_into_right_body());
    }
    let req = with_body_deadline(req, limits.body_timeout);
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// The error a body that took too long ends with (`input::body` answers 408).
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

fn with_body_deadline(req: ServiceRequest, timeout: Duration) -> ServiceRequest {
    let (http, payload) = req.into_parts();
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(Some(payload), move |payload| async move {
        let mut payload = payload?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(item)) => Some((item, Some(payload))),
            Ok(None) => None,
            Err(_) => Some((
                Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the body took too long",
                ))),
                None,
            )),
        }
    });
    // Fused: a reader may poll again after the end (actix-multipart does), which an unfold
    // alone answers with a panic.
    ServiceRequest::from_parts(http, Payload::from(stream.fuse().boxed_local()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_when() {
        let rates = KeyRates::new(0.5, 3.0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            assert_eq!(rates.take(a), Ok(()));
        }
        let wait = rates.take(a).unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert_eq!(rates.take(b), Ok(()), "another key has its own bucket");
        assert_eq!(KeyRates::new(0.0, 1.0).take(a), Ok(()), "0 is no limit");
    }

    #[test]
    fn connections_are_counted_until_dropped() {
        let c = Connections::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let one = c.open(ip, 2);
        let two = c.open(ip, 2);
        let three = c.open(ip, 2);
        assert!(!one.over_cap && !two.over_cap && three.over_cap);
        assert!(!c.open("10.0.0.2".parse().unwrap(), 2).over_cap);
        drop(three);
        drop(two);
        assert!(!c.open(ip, 2).over_cap);
        drop(one);
        assert!(c.open.lock().unwrap().is_empty());
    }
}
