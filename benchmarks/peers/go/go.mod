module lakh.example/pipeline-go

go 1.19
