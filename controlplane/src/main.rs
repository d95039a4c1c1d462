fn main() {
    println!("controlplane");
}
