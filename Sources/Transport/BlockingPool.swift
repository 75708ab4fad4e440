import Foundation

/// Dedicated threads for calls that block (fsync; later PAM and LDAP). Never the cooperative pool
/// and never an event loop: a slow disk stalls only the work queued here.
public final class BlockingPool: @unchecked Sendable {
    let condition = NSCondition()
    var work: [@Sendable () -> Void] = []
    var head = 0
    var running = 0
    var stopping = false
    var threads = 0

    public init(threads: Int, name: String) {
        for i in 0..<threads {
            let t = Thread { [self] in self.worker() }
            t.name = "\(name)-\(i)"
            t.stackSize = 512 * 1024
            t.start()
        }
        self.threads = threads
    }

    public func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        work.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Jobs queued or running.
    public var pending: Int {
        condition.lock(); defer { condition.unlock() }
        return work.count - head + running
    }

    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    func worker() {
        while true {
            condition.lock()
            while head == work.count && !stopping { condition.wait() }
            if head == work.count && stopping { condition.unlock(); return }
            let job = work[head]
            head += 1
            if head > 1024 && head * 2 > work.count { work.removeFirst(head); head = 0 }
            running += 1
            condition.unlock()
            job()
            condition.lock()
            running -= 1
            condition.unlock()
        }
    }
}
