//! Everything a client can make the admin server hold, bounded. Without a token a
//! client can hold at most [`MAX_CONNECTIONS`] connections (and idle ones only until
//! someone else connects), each for at most
//! [`HEADER_TIMEOUT`] before its request is complete, with a read buffer of at most
//! [`MAX_READ_BUFFER_BYTES`]; no request body is read before its token is checked.

use std::time::Duration;

/// Connections open at once. At the limit, a new connection takes the place of the
/// one that has been idle (no request in progress) longest, which is closed
/// (`ferry_admin_connections_evicted_total`): idle connections never lock out a
/// probe. Only when every one is answering a request is the new one closed as soon
/// as it is accepted (`ferry_admin_connections_refused_total`).
pub const MAX_CONNECTIONS: usize = 256;

/// How long the accept loop waits for a connection it asked to close to give its
/// place back.
pub const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Requests being answered at once (HTTP/1.1 answers a connection's requests one at
/// a time, so this caps the work, not the connections). One more gets 503.
pub const MAX_REQUESTS: usize = 64;

/// Authorized deploy requests whose bodies are read and handled at once: each may
/// hold up to [`crate::deploy::MAX_COMPONENT_BYTES`] while its component is compiled
/// and self-tested. Another waits up to [`UPLOAD_QUEUE_TIMEOUT`] for its turn.
pub const MAX_UPLOADS: usize = 2;

/// How long an authorized deploy request waits for one of the [`MAX_UPLOADS`] turns
/// before it gets 503.
pub const UPLOAD_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// From the moment a connection is ready for a request (just opened, or its last
/// answer sent) until that request's header block is complete. This is also the
/// keep-alive idle timeout: a connection that sends nothing for this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// To read a whole request body once its header block was accepted. A 64 MiB
/// component needs about 1.1 MiB/s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection that moves no byte in either direction for this long while none of
/// its requests is being worked on (for example a client that stops reading its
/// answer) is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The request line plus header block; larger gets 431.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// A connection's read (and write) buffer.
pub const MAX_READ_BUFFER_BYTES: usize = 64 << 10;

/// Header fields in one request.
pub const MAX_HEADERS: usize = 64;

/// How long to wait before accepting again after `accept` failed (out of file
/// descriptors, say), so a failing accept does not spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
