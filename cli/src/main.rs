fn main() {
    println!("meshwork");
}
