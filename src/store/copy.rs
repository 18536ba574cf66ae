//! Bulk writes by `COPY ... FROM STDIN (FORMAT binary)`: rows are encoded here in PostgreSQL's
//! binary copy format and sent in one stream, which PostgreSQL inserts in batches (cheaper than an
//! `INSERT ... SELECT FROM unnest(...)` of the same rows: no arrays to build and take apart, no
//! executor per row). Used by batch intake and the audit sequencer; the tables they fill have no
//! BEFORE INSERT triggers, and their copies give every column whose default is volatile (such as
//! `clock_timestamp()`): either would make PostgreSQL insert the rows one at a time.
//!
//! It never decides what is written: the statements and rows are its callers' in `store`.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Rows in the binary copy format; each row is `row(n)` followed by its `n` fields in the
/// statement's column order.
pub struct BinaryRows {
    buf: Vec<u8>,
    rows: usize,
}

impl BinaryRows {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 21);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf, rows: 0 }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub fn int2(&mut self, v: i16) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub fn uuid(&mut self, v: Option<Uuid>) -> &mut Self {
        match v {
            Some(v) => self.field(v.as_bytes()),
            None => self.null(),
        }
    }

    pub fn text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.field(v.as_bytes()),
            None => self.null(),
        }
    }

    pub fn bytea(&mut self, v: &[u8]) -> &mut Self {
        self.field(v)
    }

    /// A JSON value as `jsonb` (format version 1, then the text).
    pub fn jsonb(&mut self, v: &serde_json::Value) -> &mut Self {
        let mut bytes = vec![1u8];
        serde_json::to_writer(&mut bytes, v).expect("a JSON value serialises");
        self.field(&bytes)
    }

    pub fn timestamptz(&mut self, v: DateTime<Utc>) -> &mut Self {
        self.int8(v.timestamp_micros() - PG_EPOCH_MICROS)
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Sends the rows with `statement` (`copy t (cols) from stdin (format binary)`); returns the
    /// number of rows PostgreSQL inserted.
    ///
    /// The rows go out as one message, which grows the connection's write buffer to their size,
    /// and sqlx keeps a buffer's capacity for the connection's life: the buffers are shrunk back
    /// after the copy. (Without it, the pool's connections that had carried a sequencer round,
    /// 5,000 leaves or about 3 MB, each kept that much: a worker's heap grew by about 70 MB over
    /// its first 50,000 erasures, BENCHMARKS.md "Drain beside graphile-worker".)
    pub async fn copy_in(mut self, conn: &mut PgConnection, statement: &str) -> sqlx::Result<u64> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
        let mut copy = conn.copy_in_raw(statement).await?;
        if let Err(e) = copy.send(self.buf).await {
            // The send's error says more than the abort's.
            let _ = copy.abort("the rows could not be sent").await;
            return Err(e);
        }
        let inserted = copy.finish().await;
        conn.shrink_buffers();
        inserted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_binary_copy_format() {
        let mut rows = BinaryRows::with_capacity(0);
        assert!(rows.is_empty());
        let at = DateTime::parse_from_rfc3339("2000-01-01T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        rows.row(4).int2(7).text(None).timestamptz(at).bytea(b"ab");
        assert!(!rows.is_empty());
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 7]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        assert_eq!(rows.buf, expected);
    }
}
