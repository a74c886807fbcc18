mod cli;
mod differential;
mod safety;
mod tree;
