mod cli;
mod safety;
