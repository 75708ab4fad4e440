import CShim
import Glibc
import MailModel

/// An outbound TCP connection for the delivery threads: connect with a timeout, then reads and
/// writes that block for at most a given time each (RFC 5321 4.5.3.2 client timeouts). Never used on
/// an event loop.
public final class BlockingConnection: @unchecked Sendable {
    public let fd: Int32
    public let peer: SocketAddress
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)

    /// Connects to `peer` from `source` (when given) within `timeout`.
    public init(to peer: SocketAddress, from source: IPAddress? = nil, timeout: Duration) throws(SocketError) {
        let family = peer.ip.isV4 ? AF_INET : AF_INET6
        let s = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw SocketError(step: "socket", code: errno) }
        self.fd = s
        self.peer = peer
        if let source {
            let rc = SocketAddress(ip: source, port: 0).withSockaddr { bind(s, $0, $1) }
            if rc != 0 { let e = errno; close(s); throw SocketError(step: "bind \(source)", code: e) }
        }
        _ = rg_set_nonblocking(s)
        let rc = peer.withSockaddr { Glibc.connect(s, $0, $1) }
        if rc != 0 {
            guard errno == EINPROGRESS else { let e = errno; close(s); throw SocketError(step: "connect \(peer)", code: e) }
            var p = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
            let n = poll(&p, 1, Int32(clamping: timeout.milliseconds))
            if n <= 0 { close(s); throw SocketError(step: "connect \(peer)", code: n == 0 ? ETIMEDOUT : errno) }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { close(s); throw SocketError(step: "connect \(peer)", code: err) }
        }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Waits up to `timeout` for bytes; returns them, or [] at end of stream.
    public func read(timeout: Duration) throws(SocketError) -> [UInt8] {
        let deadline = MonotonicClock.now() + timeout.nanoseconds
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { return Array(buffer[0..<n]) }
            if n == 0 { return [] }
            guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { throw SocketError(step: "read", code: errno) }
            let now = MonotonicClock.now()
            guard now < deadline else { throw SocketError(step: "read", code: ETIMEDOUT) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, Int32(clamping: (deadline - now) / 1_000_000 + 1))
        }
    }

    /// Writes everything within `timeout`.
    public func write(_ bytes: [UInt8], timeout: Duration) throws(SocketError) {
        let deadline = MonotonicClock.now() + timeout.nanoseconds
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 { off += n; continue }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else {
                throw SocketError(step: "write", code: n == 0 ? EPIPE : errno)
            }
            let now = MonotonicClock.now()
            guard now < deadline else { throw SocketError(step: "write", code: ETIMEDOUT) }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, Int32(clamping: (deadline - now) / 1_000_000 + 1))
        }
    }
}

extension Duration {
    public var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
