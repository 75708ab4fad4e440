/// Transport: the only socket code. An epoll `EventLoop` per core (pthreads, never the cooperative
/// pool), non-blocking `Connection`s with bounded output, `ListeningSocket`s, and a `BlockingPool` of
/// threads for calls that block (fsync, and later PAM and LDAP), whose results hop back to the loop.
///
/// Chosen from the measurements in shared/PLATFORM.md: an epoll reactor holds 10,000 idle sessions in
/// tens of MB on a handful of threads, and a blocking call never stalls other sessions.
/// Everything a loop owns is touched only on that loop's thread; `execute(_:)` is the one way in.
public enum Transport {}
