/// Queue: durable storage of accepted messages. `SpoolDirectory` writes each message to `tmp/`,
/// fsyncs it, renames it into `queue/` without ever replacing a file, and fsyncs the directory; only
/// then may the server say 250. It also recovers the spool at start and reads it for the queue tools.
/// Scheduling (when to try a message again) lives apart from storage, in pure code.
///
/// Calls here block (write, fsync): run them on the blocking pool, never on an event loop or the
/// cooperative pool. The on-disk format is `docs/queue-format.md`.
public enum Queue {}
