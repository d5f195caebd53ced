module github.com/darktower/delivery

go 1.27

toolchain go1.27.3
