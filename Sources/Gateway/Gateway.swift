/// Gateway: the per-connection driver that joins Transport, the pure `ServerSession`, the relay policy
/// and the queue, plus the server that owns listeners, loops and limits, and the mail log.
///
/// It performs the actions a session returns, in order; it never decides SMTP behaviour itself.
/// Blocking work (queue writes) goes to the `BlockingPool`; answers come back on the session's loop.
public enum Gateway {}
