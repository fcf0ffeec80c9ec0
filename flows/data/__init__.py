"""Data sets: reading MVTec-layout folders and preparing the embedded ELPV demo set."""
