import Config
import Foundation
import Glibc
import Queue

enum QueueCommand {
    static func run(_ args: [String]) {
        guard let verb = args.first else {
            RelaygateCommand.usageError("queue needs list, show, flush, remove, bounce, hold or release", command: "queue")
        }
        let o = Options(Array(args.dropFirst()), command: "queue", valued: ["spool", "config", "domain"], flags: ["json"],
                        positional: verb == "show" ? 1 : (verb == "list" ? 0 : 1000))
        let spoolPath = o.last("spool") ?? LoadConfiguration.load(path: o.last("config")).spool
        guard FileManager.default.fileExists(atPath: "\(spoolPath)/queue") else {
            RelaygateCommand.fail("\(spoolPath): no spool here")
        }
        let spool: SpoolDirectory
        do { spool = try SpoolDirectory(root: spoolPath) } catch { RelaygateCommand.fail("\(spoolPath): \(error)") }
        switch verb {
        case "list": list(spool, json: o.flags.contains("json"))
        case "show":
            guard let id = o.positional.first else { RelaygateCommand.usageError("queue show needs an ID", command: "queue") }
            show(spool, id: id, json: o.flags.contains("json"))
        case "flush":
            var ids = o.positional
            if let d = o.last("domain")?.lowercased() {
                ids += spool.ids().map(\.text).filter { id in
                    (try? spool.load(id))?.envelope.recipients.contains { $0.address.lowercased().hasSuffix("@" + d) } ?? false
                }
            } else if ids.isEmpty {
                ids = spool.ids().map(\.text)
            }
            for id in ids where spool.place(of: id) != .queue { RelaygateCommand.fail("\(id): not in the active queue") }
            do { try spool.requestFlush(ids) } catch { RelaygateCommand.fail("flush: \(error)") }
            print("flush requested for \(ids.count) message\(ids.count == 1 ? "" : "s")")
        case "remove", "hold", "release", "bounce":
            guard !o.positional.isEmpty else { RelaygateCommand.usageError("queue \(verb) needs one or more IDs", command: "queue") }
            var failed = false
            for id in o.positional {
                let ok: Bool
                switch verb {
                case "remove": ok = spool.remove(id)
                case "hold": ok = spool.hold(id)
                case "release": ok = spool.release(id)
                default: ok = spool.place(of: id) == .queue && (try? spool.requestBounce(id)) != nil
                }
                if ok { print("\(id): \(verb == "bounce" ? "bounce requested" : verb == "remove" ? "removed" : verb == "hold" ? "held" : "released")") } else {
                    Console.err("relaygate: \(id): not \(verb == "release" ? "held" : "in the queue")\n")
                    failed = true
                }
            }
            exit(failed ? 1 : 0)
        default:
            RelaygateCommand.usageError("unknown queue command '\(verb)'", command: "queue")
        }
        exit(0)
    }

    /// An envelope with its delivery state, for list and show.
    static func status(_ spool: SpoolDirectory, _ e: StoredEnvelope) -> [String: Any] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var obj = ((try? JSONSerialization.jsonObject(with: encoder.encode(e))) as? [String: Any]) ?? [:]
        let st = spool.state(e.id)
        obj["held"] = spool.place(of: e.id) == .hold
        obj["attempts"] = st.attempts
        if st.next > 0 { obj["next_attempt"] = st.next }
        var rcpts = (obj["recipients"] as? [[String: Any]]) ?? []
        for i in rcpts.indices {
            if let f = st.final[i] {
                rcpts[i]["state"] = f.result?.rawValue
                rcpts[i]["reply"] = f.reply
            } else if let d = st.lastDeferral[i] {
                rcpts[i]["state"] = "deferred"
                rcpts[i]["reply"] = d.reply
            } else {
                rcpts[i]["state"] = "pending"
            }
        }
        obj["recipients"] = rcpts
        return obj
    }

    static func list(_ spool: SpoolDirectory, json: Bool) {
        var entries: [StoredEnvelope] = []
        for id in (spool.ids() + spool.heldIDs()).sorted() {
            // A message delivered or removed between listing and reading is simply not shown.
            if let e = try? spool.load(id.text) { entries.append(e.envelope) }
        }
        if json {
            let objects = entries.map { status(spool, $0) }
            let data = (try? JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("[]".utf8)
            print(String(decoding: data, as: UTF8.self))
            exit(0)
        }
        if entries.isEmpty {
            print("Queue is empty")
            exit(0)
        }
        print("ID                 Size  Arrival               Sender / Recipients")
        for e in entries {
            let size = String(e.size)
            let st = spool.state(e.id)
            let held = spool.place(of: e.id) == .hold ? "!" : " "
            print("\(e.id)\(held) \(String(repeating: " ", count: max(0, 6 - size.count)))\(size)  \(arrival(e.received))  <\(e.sender)>")
            for (i, r) in e.recipients.enumerated() {
                var line = String(repeating: " ", count: 50) + r.address
                if let f = st.final[i] { line += "  (\(f.result?.rawValue ?? ""))" } else if let d = st.lastDeferral[i] {
                    line += "\n" + String(repeating: " ", count: 52) + "(deferred: \(d.reply ?? ""))"
                }
                print(line)
            }
        }
        let total = entries.reduce(0) { $0 + $1.size }
        print("-- \(entries.count) message\(entries.count == 1 ? "" : "s"), \(total) octets")
        exit(0)
    }

    static func show(_ spool: SpoolDirectory, id: String, json: Bool) {
        let entry: SpoolDirectory.Entry
        do { entry = try spool.load(id) } catch { RelaygateCommand.fail("\(id): \(error)") }
        let e = entry.envelope
        if json {
            let data = (try? JSONSerialization.data(withJSONObject: status(spool, e), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            print(String(decoding: data, as: UTF8.self))
            exit(0)
        }
        print("id: \(e.id)")
        print("arrival: \(arrival(e.received))")
        print("size: \(e.size)")
        print("sender: <\(e.sender)>")
        let st = spool.state(e.id)
        if spool.place(of: e.id) == .hold { print("held: yes") }
        if st.attempts > 0 { print("attempts: \(st.attempts), next: \(st.next > 0 ? arrival(st.next) : "now")") }
        for (i, r) in e.recipients.enumerated() {
            var line = "recipient: <\(r.address)>"
            if let f = st.final[i] { line += " \(f.result?.rawValue ?? "") (\(f.reply ?? ""))" } else if let d = st.lastDeferral[i] {
                line += " deferred (\(d.reply ?? ""))"
            }
            if let n = r.notify { line += " notify=\(n.joined(separator: ","))" }
            if let o = r.orcpt { line += " orcpt=\(o)" }
            print(line)
        }
        if let b = e.body { print("body: \(b)") }
        if e.smtputf8 { print("smtputf8: yes") }
        if let r = e.ret { print("ret: \(r)") }
        if let v = e.envid { print("envid: \(v)") }
        print("client: \(e.client.address) helo=\(e.client.helo) listener=\(e.client.listener) session=\(e.client.session) protocol=\(e.client.protocol)")
        print("")
        fflush(nil)
        Console.out(entry.message)
        exit(0)
    }

    static func arrival(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        var buf = [CChar](repeating: 0, count: 32)
        strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S", &tm)
        return String(cString: buf)
    }
}
