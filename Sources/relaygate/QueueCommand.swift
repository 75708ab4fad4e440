import Config
import Foundation
import Glibc
import Queue

enum QueueCommand {
    static func run(_ args: [String]) {
        guard let verb = args.first else { RelaygateCommand.usageError("queue needs list or show", command: "queue") }
        let o = Options(Array(args.dropFirst()), command: "queue", valued: ["spool", "config"], flags: ["json"],
                        positional: verb == "show" ? 1 : 0)
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
        default:
            RelaygateCommand.usageError("unknown queue command '\(verb)'", command: "queue")
        }
    }

    static func list(_ spool: SpoolDirectory, json: Bool) {
        var entries: [StoredEnvelope] = []
        for id in spool.ids() {
            // A message delivered or removed between listing and reading is simply not shown.
            if let e = try? spool.load(id.text) { entries.append(e.envelope) }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let data = (try? encoder.encode(entries)) ?? Data("[]".utf8)
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
            print("\(e.id)  \(String(repeating: " ", count: max(0, 6 - size.count)))\(size)  \(arrival(e.received))  <\(e.sender)>")
            for r in e.recipients { print(String(repeating: " ", count: 50) + r.address) }
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
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: (try? encoder.encode(e)) ?? Data(), as: UTF8.self))
            exit(0)
        }
        print("id: \(e.id)")
        print("arrival: \(arrival(e.received))")
        print("size: \(e.size)")
        print("sender: <\(e.sender)>")
        for r in e.recipients {
            var line = "recipient: <\(r.address)>"
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
