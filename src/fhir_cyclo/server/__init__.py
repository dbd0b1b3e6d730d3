"""The server side: the HAPI launcher, push with its journal, and bulk loading."""
