import CShim
import Foundation
import Glibc
import Synchronization

/// Something registered with a loop for readiness events.
public protocol EventHandler: AnyObject {
    /// `readable`, `writable`, `hangup` as epoll reported them. Called on the loop's thread.
    func handleEvents(readable: Bool, writable: Bool, hangup: Bool)
}

/// One epoll reactor on its own thread. Handlers, timers and tasks run on that thread only.
public final class EventLoop: @unchecked Sendable {
    public let index: Int
    let epfd: Int32
    let wakeFD: Int32
    var handlers: [UInt64: EventHandler] = [:]
    var nextToken: UInt64 = 1
    let inbox = Mutex<[@Sendable () -> Void]>([])
    var timers = TimerHeap()
    let stopped = Atomic<Bool>(false)
    var threadID: pthread_t?
    /// Scratch space for reads; shared by this loop's connections, which copy out what they keep.
    var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    public private(set) var connectionCount = 0

    public init(index: Int) {
        self.index = index
        epfd = rg_epoll_create()
        wakeFD = rg_eventfd()
        precondition(epfd >= 0 && wakeFD >= 0, "epoll/eventfd: \(String(cString: strerror(errno)))")
        _ = rg_epoll_ctl(epfd, rg_epoll_op_add(), wakeFD, 1, 0)
    }

    /// Runs `work` on this loop's thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let wasEmpty = inbox.withLock { box -> Bool in
            box.append(work)
            return box.count == 1
        }
        if wasEmpty {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    public var inLoop: Bool {
        guard let t = threadID else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Starts the loop on a new thread.
    public func start() {
        let thread = Thread { [self] in self.run() }
        thread.name = "relaygate-loop-\(index)"
        thread.stackSize = 1 << 20
        thread.start()
    }

    public func stop() {
        stopped.store(true, ordering: .releasing)
        execute {}
    }

    func run() {
        threadID = pthread_self()
        var tokens = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while !stopped.load(ordering: .acquiring) {
            let timeout = timers.millisecondsUntilNext(now: MonotonicClock.now())
            let n = rg_epoll_wait(epfd, &tokens, &events, 256, timeout)
            if n < 0 && errno != EINTR { fatalError("epoll_wait: \(String(cString: strerror(errno)))") }
            for i in 0..<max(0, Int(n)) {
                let token = tokens[i]
                if token == 0 {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    continue
                }
                // A handler closed earlier in this batch is gone: its stale events are ignored.
                guard let h = handlers[token] else { continue }
                let e = events[i]
                h.handleEvents(readable: e & 1 != 0, writable: e & 2 != 0, hangup: e & 4 != 0)
            }
            let work = inbox.withLock { box -> [@Sendable () -> Void] in
                let w = box
                box.removeAll(keepingCapacity: true)
                return w
            }
            for w in work { w() }
            for action in timers.takeDue(now: MonotonicClock.now()) { action() }
        }
    }

    // MARK: Registration (loop thread only)

    public func register(fd: Int32, handler: EventHandler, read: Bool, write: Bool) -> UInt64 {
        let token = nextToken
        nextToken += 1
        handlers[token] = handler
        _ = rg_epoll_ctl(epfd, rg_epoll_op_add(), fd, (read ? 1 : 0) | (write ? 2 : 0), token)
        return token
    }

    public func modify(fd: Int32, token: UInt64, read: Bool, write: Bool) {
        _ = rg_epoll_ctl(epfd, rg_epoll_op_mod(), fd, (read ? 1 : 0) | (write ? 2 : 0), token)
    }

    public func unregister(fd: Int32, token: UInt64) {
        _ = rg_epoll_ctl(epfd, rg_epoll_op_del(), fd, 0, token)
        handlers[token] = nil
    }

    func connectionOpened() { connectionCount += 1 }
    func connectionEnded() { connectionCount -= 1 }

    // MARK: Timers (loop thread only)

    /// Calls `action` on this loop at or after `deadline` (monotonic ns) unless cancelled.
    @discardableResult
    public func schedule(at deadline: UInt64, _ action: @escaping () -> Void) -> TimerID {
        timers.add(deadline: deadline, action: action)
    }

    public func cancel(_ id: TimerID) { timers.cancel(id) }
}

public struct TimerID: Hashable, Sendable { let value: UInt64 }

/// A binary min-heap of deadlines; cancellation is lazy.
struct TimerHeap {
    struct Entry { let deadline: UInt64; let id: UInt64; let action: () -> Void }
    var heap: [Entry] = []
    var cancelled = Set<UInt64>()
    var next: UInt64 = 1

    mutating func add(deadline: UInt64, action: @escaping () -> Void) -> TimerID {
        let id = next
        next += 1
        heap.append(Entry(deadline: deadline, id: id, action: action))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if heap[p].deadline <= heap[i].deadline { break }
            heap.swapAt(p, i)
            i = p
        }
        return TimerID(value: id)
    }

    mutating func cancel(_ id: TimerID) { cancelled.insert(id.value) }

    mutating func popMin() -> Entry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
                if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    mutating func millisecondsUntilNext(now: UInt64) -> Int32 {
        while let first = heap.first, cancelled.contains(first.id) {
            cancelled.remove(first.id)
            _ = popMin()
        }
        guard let first = heap.first else { return 1000 }
        if first.deadline <= now { return 0 }
        return Int32(min(1000, (first.deadline - now + 999_999) / 1_000_000))
    }

    /// Removes and returns the due actions. The caller runs them after this mutation has ended, so
    /// an action may schedule or cancel timers (exclusive access: the heap is not borrowed then).
    mutating func takeDue(now: UInt64) -> [() -> Void] {
        var due: [() -> Void] = []
        while let first = heap.first, first.deadline <= now {
            let e = popMin()
            if cancelled.remove(e.id) != nil { continue }
            due.append(e.action)
        }
        return due
    }
}
