import CShim
import Glibc

/// A bound, listening TCP socket. It accepts on its loop and hands each new connection's descriptor
/// to `onAccept`, which decides which loop serves it.
public final class ListeningSocket: EventHandler, @unchecked Sendable {
    public let name: String
    public let address: SocketAddress
    let fd: Int32
    var token: UInt64 = 0
    var closed = false
    weak var loop: EventLoop?
    let onAccept: (Int32, SocketAddress, SocketAddress) -> Void

    /// Binds and listens now (so that errors surface at start-up); accepting starts with `attach(to:)`.
    public init(name: String, address: SocketAddress, backlog: Int32 = 1024,
                onAccept: @escaping (Int32, SocketAddress, SocketAddress) -> Void) throws(SocketError) {
        self.name = name
        self.onAccept = onAccept
        let family = address.ip.isV4 ? AF_INET : AF_INET6
        let s = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw SocketError(step: "socket", code: errno) }
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 { setsockopt(s, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let rc = address.withSockaddr { bind(s, $0, $1) }
        guard rc == 0 else { let e = errno; close(s); throw SocketError(step: "bind \(address)", code: e) }
        guard listen(s, backlog) == 0 else { let e = errno; close(s); throw SocketError(step: "listen \(address)", code: e) }
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        self.address = SocketAddress(storage) ?? address
        fd = s
    }

    public func attach(to loop: EventLoop) {
        self.loop = loop
        loop.execute { [self] in
            self.token = loop.register(fd: fd, handler: self, read: true, write: false)
        }
    }

    /// Stops accepting and closes the socket (on its loop).
    public func shutdown() {
        guard let loop else { close(fd); return }
        loop.execute { [self] in
            closed = true
            loop.unregister(fd: fd, token: token)
            close(fd)
        }
    }

    func pauseAccepting() {
        guard let loop else { return }
        loop.modify(fd: fd, token: token, read: false, write: false)
        loop.schedule(at: MonotonicClock.now() + 100_000_000) { [self] in
            guard !closed else { return }
            loop.modify(fd: fd, token: token, read: true, write: false)
        }
    }

    public func handleEvents(readable: Bool, writable: Bool, hangup: Bool) {
        // Bounded per wake-up so one busy listener cannot starve the loop's connections.
        for _ in 0..<64 {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let c = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { rg_accept4(fd, $0, &len) }
            }
            if c < 0 {
                let e = errno
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    // Out of descriptors: the connection waits in the backlog. Stop listening for a
                    // moment, or level-triggered epoll would wake this loop without end.
                    pauseAccepting()
                }
                return   // EAGAIN: drained
            }
            var localStorage = sockaddr_storage()
            var localLen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &localStorage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(c, $0, &localLen) }
            }
            guard let peer = SocketAddress(storage), let local = SocketAddress(localStorage) else { close(c); continue }
            onAccept(c, peer, local)
        }
    }
}
