fn main() -> std::process::ExitCode {
    serving::main::<telecom::Telecom>()
}
