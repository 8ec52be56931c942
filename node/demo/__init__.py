"""`make demo`: a hub and four Luoyang departments exchanging generated records on the local broker."""
