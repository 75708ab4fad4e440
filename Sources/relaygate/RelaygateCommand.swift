enum RelaygateCommand {
    static func main() { print("relaygate") }
}
