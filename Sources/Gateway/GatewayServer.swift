import Config
import Foundation
import Glibc
import MailModel
import Queue
import SMTPProtocol
import Synchronization
import Transport

/// Owns the event loops, the listeners, the session limits and the writer pool.
public final class GatewayServer: @unchecked Sendable {
    let context: Mutex<ServerContext>
    let loops: [EventLoop]
    var listeners: [ListeningSocket] = []
    let nextSession = Atomic<UInt64>(1)
    let nextLoop = Atomic<Int>(0)
    let active = Mutex<(total: Int, perClient: [IPAddress: Int])>((0, [:]))
    /// Drivers per loop, touched only on that loop.
    let drivers: [LoopDrivers]
    let writers: BlockingPool
    let log: MailLog

    final class LoopDrivers: @unchecked Sendable { var set: [ObjectIdentifier: SessionDriver] = [:] }

    public var boundAddresses: [(listener: String, address: String)] {
        listeners.map { ($0.name, $0.address.description) }
    }

    public init(context: ServerContext, loopCount: Int) {
        self.context = Mutex(context)
        self.log = context.log
        self.writers = context.writers
        loops = (0..<max(1, loopCount)).map { EventLoop(index: $0) }
        drivers = loops.map { _ in LoopDrivers() }
    }

    /// Binds every listener address (failing fast on any), then starts the loops.
    public func start() throws {
        let config = context.withLock { $0.configuration }
        for listener in config.listeners {
            for address in listener.addresses {
                let name = listener.name
                let socket = try ListeningSocket(name: name, address: SocketAddress(ip: address.host, port: address.port)) {
                    [unowned self] fd, peer, local in self.accepted(fd: fd, peer: peer, local: local, listener: name)
                }
                listeners.append(socket)
            }
        }
        for loop in loops { loop.start() }
        for l in listeners {
            l.attach(to: loops[0])
            log.event("listening", [("listener", l.name), ("address", l.address.description)])
        }
    }

    /// Replaces the context new sessions get; sessions in flight keep theirs.
    public func replaceContext(_ c: ServerContext) { context.withLock { $0 = c } }

    func accepted(fd: Int32, peer: SocketAddress, local: SocketAddress, listener: String) {
        let ctx = context.withLock { $0 }
        let limits = ctx.configuration.limits
        let client = peer.ip.unmapped
        let refusal: Reply? = active.withLock { a in
            if a.total >= limits.sessions { return .tooManySessions }
            if a.perClient[client, default: 0] >= limits.sessionsPerClient { return .tooManySessionsFromClient }
            a.total += 1
            a.perClient[client, default: 0] += 1
            return nil
        }
        if let refusal {
            // A fresh socket's send buffer takes a one-line reply without blocking.
            let wire = refusal.wire
            _ = wire.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            close(fd)
            log.event("refuse", [("stage", "connect"), ("client", peer.description), ("code", "\(refusal.code)"),
                                 ("status", refusal.status?.description ?? "-"), ("reply", refusal.lines[0]),
                                 ("reason", refusal == .tooManySessions ? "session limit \(limits.sessions)"
                                            : "per-client session limit \(limits.sessionsPerClient)")])
            return
        }
        let index = nextLoop.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count
        let loop = loops[index]
        let id = SessionID(nextSession.wrappingAdd(1, ordering: .relaxed).oldValue)
        let box = drivers[index]
        loop.execute { [self] in
            let connection = Connection(fd: fd, peer: peer, local: local, loop: loop)
            let driver = SessionDriver(id: id, connection: connection, context: ctx, listenerName: listener) { [self] d in
                box.set[ObjectIdentifier(d)] = nil
                self.active.withLock { a in
                    a.total -= 1
                    let n = a.perClient[client, default: 1] - 1
                    if n <= 0 { a.perClient[client] = nil } else { a.perClient[client] = n }
                }
            }
            box.set[ObjectIdentifier(driver)] = driver
            driver.start()
        }
    }

    public var activeSessions: Int { active.withLock { $0.total } }

    /// SIGTERM: stop accepting; idle sessions get 421 now, busy ones may finish their transaction
    /// within `grace`; then whatever is left is closed. Returns when no session and no write remain.
    public func shutdown(grace: Duration) {
        log.event("shutdown", [("phase", "begin"), ("sessions", "\(activeSessions)")])
        for l in listeners { l.shutdown() }
        for (i, loop) in loops.enumerated() {
            let box = drivers[i]
            loop.execute { for d in box.set.values { d.beginShutdown() } }
        }
        let deadline = MonotonicClock.now() + grace.nanoseconds
        while activeSessions > 0 && MonotonicClock.now() < deadline { usleep(20_000) }
        if activeSessions > 0 {
            log.event("shutdown", [("phase", "closing"), ("sessions", "\(activeSessions)")])
            for (i, loop) in loops.enumerated() {
                let box = drivers[i]
                loop.execute { for d in box.set.values { d.forceClose() } }
            }
            let hard = MonotonicClock.now() + 2_000_000_000
            while activeSessions > 0 && MonotonicClock.now() < hard { usleep(20_000) }
        }
        // Writes already handed to the pool finish: what they store was promised to nobody yet, but a
        // half-finished write would only leave a tmp/ file for the next start to remove.
        let writesDeadline = MonotonicClock.now() + 5_000_000_000
        while writers.pending > 0 && MonotonicClock.now() < writesDeadline { usleep(10_000) }
        for loop in loops { loop.stop() }
        log.event("shutdown", [("phase", "done")])
    }
}
