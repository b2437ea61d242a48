fn main() -> std::process::ExitCode {
    serving::main::<bankchurn::BankChurn>()
}
