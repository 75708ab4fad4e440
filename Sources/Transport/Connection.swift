import CShim
import Glibc

/// What a connection tells its owner. Called on the connection's loop.
public protocol ConnectionDelegate: AnyObject {
    func connectionReceived(_ bytes: ArraySlice<UInt8>)
    /// The peer closed, the socket failed, or `close()` was called; called once.
    func connectionClosed()
}

/// A non-blocking TCP connection on one loop. Output is buffered; while more than `outputHighWater`
/// octets wait to be sent, reading pauses, so a client that never reads its replies cannot make the
/// server buffer without bound.
public final class Connection: EventHandler, @unchecked Sendable {
    public let fd: Int32
    public let peer: SocketAddress
    public let local: SocketAddress
    public let loop: EventLoop
    public var delegate: ConnectionDelegate?

    var token: UInt64 = 0
    var output: [UInt8] = []
    var outputOffset = 0
    var readingWanted = true
    var closeWhenFlushed = false
    public private(set) var isClosed = false
    var registeredRead = true
    var registeredWrite = false

    public static let outputHighWater = 64 * 1024

    /// Takes ownership of `fd` (already non-blocking). Call on `loop`'s thread.
    public init(fd: Int32, peer: SocketAddress, local: SocketAddress, loop: EventLoop) {
        self.fd = fd
        self.peer = peer
        self.local = local
        self.loop = loop
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        token = loop.register(fd: fd, handler: self, read: true, write: false)
        loop.connectionOpened()
    }

    /// True when the peer has sent bytes not yet read (used to catch clients that talk too early).
    public var hasPendingInput: Bool {
        var b: UInt8 = 0
        return recv(fd, &b, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)) > 0
    }

    public func write(_ bytes: [UInt8]) {
        guard !isClosed, !closeWhenFlushed else { return }
        if output.isEmpty {
            output = bytes
            outputOffset = 0
        } else {
            output.append(contentsOf: bytes)
        }
        flush()
    }

    /// Sends what is buffered, then closes.
    public func closeAfterFlush() {
        guard !isClosed else { return }
        closeWhenFlushed = true
        readingWanted = false
        if outputOffset >= output.count { close() } else { updateInterest() }
    }

    public func pauseReading() { readingWanted = false; updateInterest() }
    public func resumeReading() { readingWanted = true; updateInterest() }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        loop.unregister(fd: fd, token: token)
        Glibc.close(fd)
        loop.connectionEnded()
        output = []
        let d = delegate
        delegate = nil   // break the cycle with the owner
        d?.connectionClosed()
    }

    func flush() {
        while outputOffset < output.count {
            let n = output.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + outputOffset, raw.count - outputOffset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                outputOffset += n
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if n < 0 && errno == EINTR { continue }
            close()
            return
        }
        if outputOffset >= output.count {
            output = []
            outputOffset = 0
            if closeWhenFlushed { close(); return }
        }
        updateInterest()
    }

    func updateInterest() {
        guard !isClosed else { return }
        let wantWrite = outputOffset < output.count
        let wantRead = readingWanted && !closeWhenFlushed && (output.count - outputOffset) < Self.outputHighWater
        if wantRead != registeredRead || wantWrite != registeredWrite {
            registeredRead = wantRead
            registeredWrite = wantWrite
            loop.modify(fd: fd, token: token, read: wantRead, write: wantWrite)
        }
    }

    public func handleEvents(readable: Bool, writable: Bool, hangup: Bool) {
        if writable { flush() }
        if isClosed { return }
        if hangup && !registeredRead {
            // HUP/ERR arrive even while reading is paused: the peer is gone, and level-triggered
            // epoll would report it again and again.
            close()
            return
        }
        if readable || hangup { readAvailable() }
    }

    func readAvailable() {
        // A few reads a wake-up, so one fast client cannot starve the others.
        for _ in 0..<4 {
            guard !isClosed, registeredRead else { return }
            let n = loop.readBuffer.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress!, raw.count, 0) }
            if n > 0 {
                delegate?.connectionReceived(loop.readBuffer[0..<n])
                if n < loop.readBuffer.count { return }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
            if n < 0 && errno == EINTR { continue }
            close()   // EOF or error
            return
        }
    }
}
